"""CameraToRobotEstimator end to end with a test-local oracle detector (true keypoints + noise)."""

import numpy as np
import pytest

from ctrnet_ros.core import se3
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.core.estimator import CameraToRobotEstimator, EstimatorSetupError
from ctrnet_ros.sim.viewpoints import ShellConfig, sample_visible_view

from oracle import OracleDetector


@pytest.fixture
def setup(panda, panda_spec):
    det = OracleDetector(panda_spec.names)
    return det, CameraToRobotEstimator(detector=det, robot=panda, spec=panda_spec)


@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])  # 16:9 exercises the letterbox
def test_recovers_pose_through_the_input_transform(setup, panda, panda_spec, rng, size):
    det, est = setup
    cam = PinholeCamera.from_fov(width=size[0], height=size[1], fovy_deg=45.0)
    q, T, kp, _ = sample_visible_view(rng, panda, panda_spec, cam, ShellConfig(distance_m=(1.0, 2.0)))
    det.scene = (cam, T, kp)
    out = est.estimate(np.zeros((size[1], size[0], 3), np.uint8), cam, q, stamp_ns=42)
    assert out.ok and out.stamp_ns == 42
    assert se3.translation_error(out.T_camera_base, T) < 1e-6
    np.testing.assert_allclose(out.keypoints_uv, cam.project_from(T, kp), atol=1e-6)
    assert set(out.timings_ms) == {"fk", "inference", "pnp"}


def test_bad_inputs_give_reasons_not_exceptions(setup, panda, panda_spec, rng):
    det, est = setup
    cam = PinholeCamera.from_fov(width=640, height=480, fovy_deg=45.0)
    q, T, kp, _ = sample_visible_view(rng, panda, panda_spec, cam, ShellConfig(distance_m=(1.0, 2.0)))
    det.scene = (cam, T, kp)
    img = np.zeros((480, 640, 3), np.uint8)

    def reason(*args, **kwargs):
        out = est.estimate(*args, **kwargs)
        assert not out.ok and out.T_camera_base is None and out.detail
        return out.reason, out.detail

    assert reason(np.zeros((240, 320, 3), np.uint8), cam, q)[0] == "camera_mismatch"
    assert reason(img.astype(np.float32), cam, q)[0] == "bad_image"
    assert reason(img[:, :, 0], cam, q)[0] == "bad_image"
    r, d = reason(img, cam, {k: v for k, v in q.items() if k != "panda_joint4"})
    assert r == "joint_states" and "panda_joint4" in d
    assert reason(img, cam, q | {"panda_joint2": float("nan")})[0] == "joint_states"
    r, d = reason(img, cam, None, joint_problem="stale: newest sample is 300 ms older than the image")
    assert r == "joint_states" and "stale" in d
    det.confidence = np.full(7, 0.05)  # nothing recognised: robot out of view
    assert reason(img, cam, q)[0] == "robot_not_visible"
    det.confidence = np.array([1, 1, 1, 0.05, 0.05, 0.05, 0.05])
    assert reason(img, cam, q)[0] == "robot_not_visible"


def test_out_of_image_keypoints_are_not_used(setup, panda, panda_spec, rng):
    det, est = setup
    cam = PinholeCamera.from_fov(width=640, height=480, fovy_deg=45.0)
    q, T, kp, _ = sample_visible_view(rng, panda, panda_spec, cam, ShellConfig(distance_m=(1.0, 2.0)))
    # Move the camera so part of the arm leaves the image: a few keypoints project outside.
    shift = se3.make_transform(np.eye(3), [0.35, 0.0, 0.0])
    T2 = shift @ T
    inside = cam.in_image(cam.project_from(T2, kp))
    det.scene = (cam, T2, kp)
    out = est.estimate(np.zeros((480, 640, 3), np.uint8), cam, q)
    if inside.sum() >= 4:
        assert out.ok and not out.pnp.inliers[~inside].any()
    else:
        assert out.reason == "robot_not_visible"


def test_model_and_spec_must_match(panda, panda_spec):
    with pytest.raises(EstimatorSetupError, match="do not match"):
        CameraToRobotEstimator(detector=OracleDetector(panda_spec.names[::-1]), robot=panda, spec=panda_spec)


def test_network_run_ahead_of_the_joint_states_is_reused(setup, panda, panda_spec, rng):
    """detect() first (as the node does while joint states travel), estimate() later: one network run."""
    det, est = setup
    cam = PinholeCamera.from_fov(width=640, height=480, fovy_deg=45.0)
    q, T, kp, _ = sample_visible_view(rng, panda, panda_spec, cam, ShellConfig(distance_m=(1.0, 2.0)))
    det.scene = (cam, T, kp)
    calls = []
    inner = det.detect
    det.detect = lambda img: calls.append(1) or inner(img)
    img = np.zeros((480, 640, 3), np.uint8)
    prepared = est.detect(img, cam)
    out = est.estimate(img, cam, q, prepared=prepared)
    assert out.ok and len(calls) == 1 and se3.translation_error(out.T_camera_base, T) < 1e-6
    other = PinholeCamera.from_fov(width=640, height=480, fovy_deg=45.0)  # another camera object: run again
    assert est.estimate(img, other, q, prepared=prepared).ok and len(calls) == 2
    assert est.detect(np.zeros((240, 320, 3), np.uint8), cam) is None  # a size mismatch is left to estimate()
