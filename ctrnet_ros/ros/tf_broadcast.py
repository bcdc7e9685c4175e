"""TF broadcasting: tf2_ros's broadcasters when they import, else small equivalents with tf2's topics and QoS.

``tf2_ros`` is not available as a PyPI wheel (see docs ENVIRONMENT). The fallbacks publish
``tf2_msgs/TFMessage`` exactly as tf2_ros does, so real TF listeners (rviz, tf2_echo, a controller's
``tf2_ros.Buffer``) cannot tell the difference:

* ``/tf``: reliable, keep-last 100, volatile (``tf2_ros.DynamicBroadcasterQoS``);
* ``/tf_static``: reliable, keep-last 1, transient-local (``tf2_ros.StaticBroadcasterQoS``). With a
  depth of 1 a late-joining listener only gets the *last* message, so the static broadcaster keeps
  every transform it was given, keyed by child frame, and re-sends all of them each time.

Both take a node (``TransformBroadcaster(node, qos=None)``), like tf2_ros; they never subclass it.
"""

from __future__ import annotations

from typing import Iterable

from geometry_msgs.msg import TransformStamped
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

__all__ = [
    "TransformBroadcaster",
    "StaticTransformBroadcaster",
    "USING_TF2_ROS",
    "TF_TOPIC",
    "TF_STATIC_TOPIC",
    "dynamic_broadcaster_qos",
    "static_broadcaster_qos",
]

TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"


def dynamic_broadcaster_qos() -> QoSProfile:
    """tf2's ``/tf`` QoS: reliable, keep-last 100, volatile."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def static_broadcaster_qos() -> QoSProfile:
    """tf2's ``/tf_static`` QoS: reliable, keep-last 1, transient-local (latched)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _as_list(transform: TransformStamped | Iterable[TransformStamped]) -> list[TransformStamped]:
    if isinstance(transform, TransformStamped):
        return [transform]
    return list(transform)


class _FallbackTransformBroadcaster:
    """Publishes ``TransformStamped`` on ``/tf`` (tf2_ros.TransformBroadcaster's behaviour)."""

    def __init__(self, node, qos: QoSProfile | int | None = None):
        self._pub = node.create_publisher(TFMessage, TF_TOPIC, dynamic_broadcaster_qos() if qos is None else qos)

    def sendTransform(self, transform: TransformStamped | Iterable[TransformStamped]) -> None:  # noqa: N802 (tf2 API)
        self._pub.publish(TFMessage(transforms=_as_list(transform)))


class _FallbackStaticTransformBroadcaster:
    """Publishes on ``/tf_static``, re-sending every transform it holds (keyed by child frame) each time."""

    def __init__(self, node, qos: QoSProfile | int | None = None):
        self._pub = node.create_publisher(TFMessage, TF_STATIC_TOPIC,
                                          static_broadcaster_qos() if qos is None else qos)
        self._by_child: dict[str, TransformStamped] = {}

    def sendTransform(self, transform: TransformStamped | Iterable[TransformStamped]) -> None:  # noqa: N802 (tf2 API)
        for t in _as_list(transform):
            self._by_child[t.child_frame_id] = t
        self._pub.publish(TFMessage(transforms=list(self._by_child.values())))


try:  # the real thing when it is installed (a ROS distribution, a colcon workspace)
    from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster  # type: ignore[no-redef]

    USING_TF2_ROS = True
except ImportError:  # pip-installed rclpy: no tf2_ros wheel
    TransformBroadcaster = _FallbackTransformBroadcaster  # type: ignore[misc]
    StaticTransformBroadcaster = _FallbackStaticTransformBroadcaster  # type: ignore[misc]
    USING_TF2_ROS = False
