"""ctrnet_node as a real subprocess (``python -m ctrnet_ros.ros.ctrnet_node_main``), fed a sim bag from here.

Accuracy is the in-process oracle test's business (test_ros_node.py); here the point is the process
boundary: start-up from the command line, a real model file, topics and TF across processes, and a
clean exit on SIGINT. The model is a tiny random-weight checkpoint the test makes itself.
`make test` runs this inside a private network namespace.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytestmark = pytest.mark.skipif(os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST",
                                reason="run through `make test` (loopback-only ROS discovery in a private netns)")

def _tiny_model(folder: Path) -> Path:
    """A random-weight checkpoint with the Panda's keypoint names: made in milliseconds, loads on the torch
    backend, and exercises the real model-loading path of the node (its detections are meaningless)."""
    torch = pytest.importorskip("torch")
    from ctrnet_ros.core.robot import KeypointSpec
    from ctrnet_ros.net.registry import build_model, save_checkpoint

    torch.manual_seed(0)
    model, config = build_model("ctrnet_slim", input_size=(64, 48), trunk_width=8, head_channels=16, mask_channels=8)
    path = folder / "tiny.pt"
    save_checkpoint(path, model, config, {"keypoint_names": KeypointSpec.builtin("panda").names,
                                          "input_size": [64, 48]})
    return path


@pytest.fixture
def isolated_env(monkeypatch):
    """ReplaySession selects a Fast DDS profile through the environment: undo that after the test."""
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "")
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    pytest.importorskip("mujoco")
    from ctrnet_ros.ros.replay_session import ensure_sim_bag

    return ensure_sim_bag(tmp_path_factory.mktemp("xproc") / "bag", duration_s=2.0, seed=4, width=320, height=240,
                          progress=False)


def test_node_subprocess_publishes_tf_at_image_stamps(request, tmp_path, isolated_env):
    pytest.importorskip("ctrnet_ros.inference")
    model = _tiny_model(tmp_path)
    small_bag = request.getfixturevalue("small_bag")  # recorded only when there is a model to test
    from ctrnet_ros.ros.calibration_file import SavedCalibration, save_calibration
    from ctrnet_ros.ros.replay_session import ReplaySession
    from ctrnet_ros.sim.groundtruth import GroundTruth

    gt = GroundTruth.load(small_bag / "groundtruth.yaml")
    # Seed with an unconverged calibration: the node then publishes on /tf at every processed image's stamp
    # whether or not a tiny fixture model finds the robot (its own fused pose takes over once it does).
    seed = SavedCalibration(parent_frame=gt.parent_frame, child_frame=gt.child_frame,
                            T_parent_child=gt.segments[0].T_parent_child, covariance=None, frames=0,
                            converged=False, stamp_ns=0)
    seed_file = save_calibration(seed, tmp_path / "seed")[0]
    params = {"model": str(model), "calibration_file": str(seed_file), "diagnostics_period_s": 0.25}
    with ReplaySession(small_bag, params, log_path=tmp_path / "node.log") as session:
        session.wait_until_ready(timeout_s=120.0)
        session.play()
        session.wait_until_idle(settle_s=1.0)
        kv = session.diagnostic_values()
        code = session.stop_node()
        tfs = [t for t in session.rec.tf if t.child == gt.child_frame]
        stamps = set(session.rec.image_published_s)
    log = (tmp_path / "node.log").read_text()
    assert code == 0, f"ctrnet_node did not exit cleanly on SIGINT:\n{log[-2000:]}"
    assert int(kv.get("processed frames", 0)) > 0, f"the node processed no frame: {kv}"
    assert tfs, f"no TF from the subprocess; diagnostics: {kv.get('last error')}; counts: {kv.get('error counts')}"
    for t in tfs:
        assert t.parent == gt.parent_frame and not t.static
        assert t.stamp_ns in stamps, "TF stamps must be image stamps"
    assert len({t.stamp_ns for t in tfs}) >= int(kv["processed frames"]) - 2  # about one TF per processed frame


def test_node_subprocess_exits_with_a_clear_message_when_the_model_is_missing(tmp_path, isolated_env):
    import subprocess

    from ctrnet_ros.ros.replay_session import node_command

    missing = tmp_path / "nope.onnx"
    out = subprocess.run(node_command({"model": str(missing)}), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "model" in text and str(missing) in text and "does not exist" in text
