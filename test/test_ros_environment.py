"""The ROS 2 environment works: two processes exchange a message over Fast DDS (loopback only).

`make test` runs this inside a private network namespace with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.
"""

import os
import subprocess
import sys
import textwrap
import time

import pytest

rclpy = pytest.importorskip("rclpy")

PUBLISHER = textwrap.dedent("""
    import sys, time, rclpy
    from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage
    from geometry_msgs.msg import TransformStamped
    rclpy.init()
    node = rclpy.create_node('ctrnet_test_publisher')
    qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(TFMessage, sys.argv[1], qos)
    t = TransformStamped()
    t.header.frame_id = 'panda_link0'
    t.child_frame_id = 'camera_color_optical_frame'
    t.transform.translation.x = 1.25
    t.transform.rotation.w = 1.0
    pub.publish(TFMessage(transforms=[t]))
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    rclpy.shutdown()
""")


def test_cross_process_tf_message():
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        pytest.skip("run through `make test` (loopback-only ROS discovery in a private network namespace)")
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    topic = f"/ctrnet_test_tf_{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, topic, "20"])
    received = []
    rclpy.init()
    try:
        node = rclpy.create_node("ctrnet_test_subscriber")
        qos = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(TFMessage, topic, received.append, qos)
        deadline = time.monotonic() + 20.0
        while not received and time.monotonic() < deadline and proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.shutdown()
        proc.terminate()
        proc.wait(timeout=10)
    assert received, "no TFMessage arrived from the publisher process within 20 s"
    tf = received[0].transforms[0]
    assert tf.header.frame_id == "panda_link0" and tf.transform.translation.x == 1.25
