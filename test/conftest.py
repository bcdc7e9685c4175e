"""Shared fixtures: the Panda model (loaded once per session) and seeded generators."""

import numpy as np
import pytest

from ctrnet_ros.core.robot import KeypointSpec, RobotModel


@pytest.fixture(scope="session")
def panda_spec():
    return KeypointSpec.builtin("panda")


@pytest.fixture(scope="session")
def panda(panda_spec):
    return RobotModel.from_spec(panda_spec)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
