"""Shared fixtures: the Panda model (loaded once per session) and seeded generators."""

import os

# Offscreen rendering without a display: must be set before anything imports mujoco.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ctrnet_ros.core.robot import KeypointSpec, RobotModel  # noqa: E402


@pytest.fixture(scope="session")
def panda_spec():
    return KeypointSpec.builtin("panda")


@pytest.fixture(scope="session")
def panda(panda_spec):
    return RobotModel.from_spec(panda_spec)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    small tensors gain nothing from two, and lose much when the two cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
