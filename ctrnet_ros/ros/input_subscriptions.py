"""The camera and joint-state subscriptions both nodes make, with the same QoS.

``ctrnet_node`` and ``collector_node`` read the same three inputs the same way, so that a camera set
up for one works for the other: the image (raw or ``<image_topic>/compressed``), its camera_info and
the joint states, all in one callback group.
"""

from __future__ import annotations

import copy
from typing import Callable

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState

__all__ = ["subscribe_camera_and_joints"]


def subscribe_camera_and_joints(node: Node, *, image_topic: str, compressed: bool, camera_info_topic: str,
                                joint_states_topic: str, on_image: Callable, on_camera_info: Callable,
                                on_joint_states: Callable, callback_group: CallbackGroup) -> None:
    """Subscribe ``node`` to its image, camera_info and joint-state topics in ``callback_group``.

    Args:
        image_topic: the topic subscribed to (already ``.../compressed`` when ``compressed``).
        compressed: ``sensor_msgs/CompressedImage`` instead of ``sensor_msgs/Image``.
        camera_info_topic, joint_states_topic: the other inputs.
        on_image, on_camera_info, on_joint_states: the callbacks (keep them short: they share the group).
    """
    # Sensor-data QoS (best effort) matches any camera publisher. Where a best-effort transport
    # loses large images, set qos_overrides.<image topic>.subscription.reliability: reliable.
    # A copy: QoS overrides modify the profile object in place, and qos_profile_sensor_data is shared.
    node.create_subscription(CompressedImage if compressed else Image, image_topic, on_image,
                             copy.copy(qos_profile_sensor_data), callback_group=callback_group,
                             qos_overriding_options=QoSOverridingOptions.with_default_policies())
    node.create_subscription(CameraInfo, camera_info_topic, on_camera_info, qos_profile_sensor_data,
                             callback_group=callback_group)
    node.create_subscription(JointState, joint_states_topic, on_joint_states,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
                             callback_group=callback_group)
