"""ctrnet_ros.ros building blocks without a ROS graph: conversions, saved calibrations, the frame slot,
diagnostics levels; plus the fallback TF broadcasters on a private rclpy context."""

from __future__ import annotations

import ast
import os
import threading

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ctrnet_ros.core import se3  # noqa: E402
from ctrnet_ros.core.pnp import se3_exp  # noqa: E402
from ctrnet_ros.ros import conversions as conv  # noqa: E402
from ctrnet_ros.ros.calibration_file import (CalibrationFileError, SavedCalibration, launch_snippet,  # noqa: E402
                                             load_calibration, save_calibration)
from ctrnet_ros.ros.latest_slot import LatestSlot  # noqa: E402


def _random_T(rng):
    return se3.make_transform(se3.rvec_to_matrix(rng.normal(size=3)), rng.normal(size=3))


def test_transform_and_pose_round_trip(rng):
    T = _random_T(rng)
    msg = conv.matrix_to_transform_stamped(T, parent_frame="base", child_frame="cam", stamp_ns=1_700_000_000_5)
    assert (msg.header.frame_id, msg.child_frame_id) == ("base", "cam")
    assert conv.time_to_ns(msg.header.stamp) == 1_700_000_000_5
    np.testing.assert_allclose(conv.transform_to_matrix(msg), T, atol=1e-12)
    np.testing.assert_allclose(conv.pose_to_matrix(conv.matrix_to_pose(T)), T, atol=1e-12)
    with pytest.raises(ValueError):
        conv.ns_to_time(-1)


def test_ros_covariance_matches_separate_position_and_orientation_perturbations(rng):
    """Sample left perturbations, measure dp and dphi directly, compare with the converted covariance."""
    T = _random_T(rng)
    A = rng.normal(size=(6, 6)) * 1e-3
    cov_left = A @ A.T
    xi = rng.multivariate_normal(np.zeros(6), cov_left, size=20000)
    samples = []
    for d in xi:
        Tp = se3_exp(d) @ T
        dp = Tp[:3, 3] - T[:3, 3]
        dphi = se3.matrix_to_rvec(Tp[:3, :3] @ T[:3, :3].T)  # R = Exp(dphi) R_hat, fixed (parent) axes
        samples.append(np.concatenate([dp, dphi]))
    empirical = np.cov(np.array(samples).T)
    ros = conv.left_covariance_to_ros(T, cov_left)
    np.testing.assert_allclose(ros, empirical, atol=0.05 * np.abs(ros).max())
    np.testing.assert_allclose(conv.ros_covariance_to_left(T, ros), cov_left, atol=1e-15)


def test_pose_with_unknown_covariance():
    msg = conv.matrix_to_pose_with_covariance_stamped(np.eye(4), None, parent_frame="base", stamp_ns=3)
    assert msg.pose.covariance[0] == -1.0 and msg.header.frame_id == "base"


def test_saved_calibration_round_trip_and_launch_snippet(tmp_path, rng):
    T = _random_T(rng)
    cov = np.diag(np.arange(1, 7) * 1e-6)
    cal = SavedCalibration(parent_frame="panda_link0", child_frame="cam_optical", T_parent_child=T, covariance=cov,
                           frames=42, converged=True, stamp_ns=1_700_000_001_000_000_007)
    yaml_path, launch_path = save_calibration(cal, tmp_path / "new" / "folder")
    back = load_calibration(yaml_path)
    np.testing.assert_allclose(back.T_parent_child, T, atol=1e-12)
    np.testing.assert_allclose(back.covariance, cov)
    assert (back.frames, back.converged, back.stamp_ns) == (42, True, 1_700_000_001_000_000_007)
    tree = ast.parse(launch_path.read_text())
    assert not list(tmp_path.glob("new/folder/.*.tmp")), "no temporary files left behind"
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node")
    args = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "arguments"))
    values = dict(zip(args[::2], args[1::2]))
    t, q = se3.transform_to_translation_quat(T)
    np.testing.assert_allclose([float(values[k]) for k in ("--x", "--y", "--z")], t, atol=1e-12)
    np.testing.assert_allclose([float(values[k]) for k in ("--qx", "--qy", "--qz", "--qw")], q, atol=1e-12)


def test_hostile_frame_ids_stay_inert_in_the_launch_snippet():
    evil = 'cam"""\nimport os; os.system("touch /tmp/pwned")\n"""'
    cal = SavedCalibration(parent_frame="base'\n#", child_frame=evil, T_parent_child=np.eye(4), covariance=None,
                           frames=1, converged=False, stamp_ns=0)
    tree = ast.parse(launch_snippet(cal))
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert {getattr(n, "module", None) for n in imports} == {"launch", "launch_ros.actions"}
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node")
    args = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "arguments"))
    assert args[args.index("--child-frame-id") + 1] == evil


def test_save_failure_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cal = SavedCalibration(parent_frame="a", child_frame="b", T_parent_child=np.eye(4), covariance=None, frames=0,
                           converged=False, stamp_ns=0)
    with pytest.raises(CalibrationFileError, match="cannot write the calibration"):
        save_calibration(cal, blocker / "sub")
    (tmp_path / "bad.yaml").write_text("parent_frame: a\nchild_frame: b\ntranslation: [0, 0]\n")
    with pytest.raises(CalibrationFileError, match="translation"):
        load_calibration(tmp_path / "bad.yaml")


def test_latest_slot_keeps_only_the_newest():
    slot = LatestSlot()
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.dropped == 2 and slot.get(timeout=0) == 3 and slot.get(timeout=0) is None
    got = []
    t = threading.Thread(target=lambda: got.append(slot.get()))
    t.start()
    slot.close()
    t.join(timeout=5)
    assert got == [None] and not t.is_alive()


def test_diagnostic_levels():
    from diagnostic_msgs.msg import DiagnosticStatus

    from ctrnet_ros.ros.diagnostics import CalibrationSummary, NodeStats

    stats = NodeStats()
    st = stats.report(name="n: c", hardware_id="cam", image_topic="/img", summary=CalibrationSummary())
    assert st.level == DiagnosticStatus.WARN and "waiting for images on /img" in st.message
    stats.image_received()
    stats.frame_done(reason="bad_image", detail="unsupported image encoding '16UC1'")
    st = stats.report(name="n: c", hardware_id="cam", image_topic="/img", summary=CalibrationSummary())
    assert st.level == DiagnosticStatus.ERROR and st.message == "bad_image: unsupported image encoding '16UC1'"
    stats.image_received()
    stats.frame_done(reason="robot_not_visible", detail="only 2 of 7 keypoints")
    assert stats.report(name="n: c", hardware_id="cam", image_topic="/img",
                        summary=CalibrationSummary()).level == DiagnosticStatus.WARN
    stats.image_received()
    stats.frame_done(reason=None, rmse_px=0.8)
    st = stats.report(name="n: c", hardware_id="cam", image_topic="/img",
                      summary=CalibrationSummary(fused_frames=25, converged=True, trans_std_m=0.001, rot_std_deg=0.05))
    kv = {v.key: v.value for v in st.values}
    assert st.level == DiagnosticStatus.OK and st.message.startswith("converged: 25 frames fused")
    assert kv["error counts"] == "bad_image: 1, robot_not_visible: 1" and kv["last error"].startswith("robot_not")
    st = stats.report(name="n: c", hardware_id="cam", image_topic="/img",
                      summary=CalibrationSummary(fused_frames=1, collecting="1 of 3"))
    assert st.level == DiagnosticStatus.OK and st.message.startswith("collecting: 1 of 3 distinct robot configurations")
    assert {v.key: v.value for v in st.values}["collecting configurations"] == "1 of 3"
    st = stats.report(name="n: c", hardware_id="cam", image_topic="/img",
                      summary=CalibrationSummary(fused_frames=40, disputed="12 frames (1 distinct robot configurations)"))
    assert st.level == DiagnosticStatus.WARN and st.message.startswith("disputed: the last 12 frames")
    assert {v.key: v.value for v in st.values}["disputed by"] == "12 frames (1 distinct robot configurations)"


@pytest.mark.skipif(os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST",
                    reason="run through `make test` (loopback-only ROS discovery in a private netns)")
def test_static_broadcaster_resends_every_child_frame():
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tf2_msgs.msg import TFMessage

    from ctrnet_ros.ros.tf_broadcast import (USING_TF2_ROS, StaticTransformBroadcaster, TransformBroadcaster,
                                             static_broadcaster_qos)

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("ctrnet_tf_test", context=ctx)
        static, dynamic = StaticTransformBroadcaster(node), TransformBroadcaster(node)
        for child in ("cam_a", "cam_b", "cam_a"):
            static.sendTransform(conv.matrix_to_transform_stamped(np.eye(4), parent_frame="base", child_frame=child,
                                                                  stamp_ns=1))
        dynamic.sendTransform([conv.matrix_to_transform_stamped(np.eye(4), parent_frame="base", child_frame="x",
                                                                stamp_ns=2)])
        got = []
        # a late joiner gets the latched (last) message, which must hold both child frames
        node.create_subscription(TFMessage, "/tf_static", got.append, static_broadcaster_qos())
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    assert got, "no latched /tf_static message"
    assert sorted(t.child_frame_id for t in got[-1].transforms) == ["cam_a", "cam_b"]
    assert USING_TF2_ROS or type(static).__name__ == "_FallbackStaticTransformBroadcaster"


@pytest.mark.parametrize("threads, expected", [(None, "SingleThreadedExecutor"), (1, "SingleThreadedExecutor"),
                                               (2, "MultiThreadedExecutor")])
def test_run_node_spins_the_executor_the_node_asks_for(monkeypatch, threads, expected):
    from ctrnet_ros.ros import entry_point

    used = []

    def fake(name):
        class Executor:
            def __init__(self, num_threads=None):
                used.append((name, num_threads))

            def add_node(self, node):
                pass

            def spin(self):
                raise KeyboardInterrupt  # as Ctrl-C would

        return Executor

    monkeypatch.setattr(entry_point, "SingleThreadedExecutor", fake("SingleThreadedExecutor"))
    monkeypatch.setattr(entry_point, "MultiThreadedExecutor", fake("MultiThreadedExecutor"))

    class Node:
        destroyed = False

        def destroy_node(self):
            Node.destroyed = True

    node = Node()
    if threads is not None:
        node.executor_threads = threads
    assert entry_point.run_node(lambda: node, argv=["x"], num_threads=1) == entry_point.EXIT_OK
    assert used[0][0] == expected and Node.destroyed
    if expected == "MultiThreadedExecutor":
        assert used[0][1] == threads
