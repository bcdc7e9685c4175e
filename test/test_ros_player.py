"""ctrnet-play: rosbags messages -> rclpy messages (field copy), and a replay with recorded stamps and /clock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("rosbags")

from ctrnet_ros.core.camera import PinholeCamera  # noqa: E402
from ctrnet_ros.core.msgfields import camera_info_msg_to_camera, image_msg_to_rgb, stamp_to_ns  # noqa: E402
from ctrnet_ros.sim import bag as simbag  # noqa: E402

CAMERA = PinholeCamera.from_fov(width=64, height=48, fovy_deg=50.0)


class FlatRenderer:
    """A renderer stand-in: a flat colour that changes with the joint positions (no MuJoCo needed)."""

    def render(self, joint_positions, T_camera_base, camera):
        rgb = np.zeros((camera.height, camera.width, 3), np.uint8)
        rgb[...] = int(abs(joint_positions["panda_joint1"]) * 100) % 256
        return SimpleNamespace(rgb=rgb)


@pytest.fixture
def tiny_bag(tmp_path, panda):
    q0 = panda.default_positions()

    def q_of_t(t):
        return {**q0, "panda_joint1": 0.5 * np.sin(3 * t)}

    summary = simbag.write_sim_bag(tmp_path / "bag", renderer=FlatRenderer(), robot=panda, camera=CAMERA,
                                   T_camera_base=np.eye(4), q_of_t=q_of_t, duration_s=0.5, progress=False)
    return summary


def test_to_rclpy_message_copies_every_field():
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from ctrnet_ros.ros.bag_player import rclpy_message_class, to_rclpy_message

    ts = simbag.kilted_typestore()
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    img = to_rclpy_message(simbag.rgb_to_image_msg(ts, rgb, 1_700_000_000_123_456_789, "cam"), Image)
    assert isinstance(img, Image) and img.header.frame_id == "cam"
    assert stamp_to_ns(img.header.stamp) == 1_700_000_000_123_456_789
    np.testing.assert_array_equal(image_msg_to_rgb(img), rgb)
    info = to_rclpy_message(simbag.camera_to_camera_info_msg(ts, CAMERA, 5, "cam"), CameraInfo)
    np.testing.assert_allclose(camera_info_msg_to_camera(info).K, CAMERA.K)
    js = to_rclpy_message(simbag.make_joint_state_msg(ts, ["a", "b"], [0.1, 0.2], [0.0, 0.0], [0.0, 0.0], 7, ""),
                          JointState)
    assert list(js.name) == ["a", "b"] and list(js.position) == [0.1, 0.2]
    assert rclpy_message_class("sensor_msgs/msg/Image") is Image


@pytest.mark.skipif(os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST",
                    reason="run through `make test` (loopback-only ROS discovery in a private netns)")
def test_player_replays_recorded_stamps_and_clock(tiny_bag):
    import rclpy
    import rclpy.executors
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from ctrnet_ros.eval.bagio import read_bag_messages

    recorded = {}
    for topic, log_ns, msg in read_bag_messages(tiny_bag.bag_path):
        recorded.setdefault(topic, []).append(stamp_to_ns(msg.header.stamp))
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    got = {t: [] for t in recorded}
    clock = []
    try:
        node = rclpy.create_node("ctrnet_player_probe", context=ctx)
        qos = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls in ((simbag.DEFAULT_IMAGE_TOPIC, Image), (simbag.DEFAULT_CAMERA_INFO_TOPIC, CameraInfo),
                           (simbag.DEFAULT_JOINT_STATES_TOPIC, JointState)):
            node.create_subscription(cls, topic, lambda m, t=topic: got[t].append(stamp_to_ns(m.header.stamp)), qos)
        node.create_subscription(Clock, "/clock", lambda m: clock.append(stamp_to_ns(m.clock)), qos)
        executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        proc = subprocess.Popen([sys.executable, "-m", "ctrnet_ros.ros.bag_player", str(tiny_bag.bag_path),
                                 "--rate", "4", "--clock", "--wait-for-subscribers", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline, exited_at = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if proc.poll() is not None:  # the player is done: drain what is in flight, then stop
                exited_at = exited_at or time.monotonic()
                if all(len(got[t]) >= len(recorded[t]) for t in recorded) or time.monotonic() - exited_at > 15.0:
                    break
        out = proc.communicate(timeout=30)[0]
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    assert proc.returncode == 0, out
    for topic in recorded:
        missing = sorted(set(recorded[topic]) - set(got[topic]))
        assert got[topic] == recorded[topic], (f"{topic}: stamps differ from the recorded ones: got {len(got[topic])} "
                                               f"of {len(recorded[topic])}, first missing {missing[:3]}")
    assert clock and max(clock) == tiny_bag.last_stamp_ns
    assert "played" in out
