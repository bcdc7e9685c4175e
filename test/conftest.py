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
