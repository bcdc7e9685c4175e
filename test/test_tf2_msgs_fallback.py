"""Checks for tf2_msgs, real or the fallback built by tools/build_tf2_msgs.sh.

No rclpy.init(): serialization works without a context.
"""

from pathlib import Path

import pytest

pytest.importorskip("rclpy")
serialization = pytest.importorskip("rclpy.serialization")

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_fallback_package_is_colcon_ignored():
    assert (REPO_ROOT / "tools" / "tf2_msgs_fallback" / "COLCON_IGNORE").is_file()


def test_tfmessage_imports():
    from tf2_msgs.msg import TFMessage

    assert TFMessage().transforms == []


def test_tfmessage_serialization_round_trip():
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    t = TransformStamped()
    t.header.stamp.sec = 12
    t.header.stamp.nanosec = 345
    t.header.frame_id = "base_link"
    t.child_frame_id = "camera_link"
    t.transform.translation.x = 0.1
    t.transform.translation.y = -0.2
    t.transform.translation.z = 0.3
    t.transform.rotation.x = 0.0
    t.transform.rotation.y = 0.0
    t.transform.rotation.z = 0.70710678
    t.transform.rotation.w = 0.70710678

    msg = TFMessage(transforms=[t])
    data = serialization.serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 0

    back = serialization.deserialize_message(data, TFMessage)
    assert back == msg
    assert len(back.transforms) == 1
    assert back.transforms[0].child_frame_id == "camera_link"
    assert back.transforms[0].transform.rotation.w == pytest.approx(0.70710678)
