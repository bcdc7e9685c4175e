"""Reading rosbag2 recordings without ROS, through ``rosbags``, and converting their messages.

Works on bags recorded by ``ros2 bag record`` and on the synthetic bags that
:func:`ctrnet_ros.sim.bag.write_sim_bag` writes, in mcap or sqlite3 storage. Message types come
from the bag's own definitions where it stores them, else from the ROS 2 Kilted typestore.
Messages are rosbags' dataclasses (numpy arrays for numeric arrays), never rclpy messages.

Caveat (see docs ENVIRONMENT "Bags without ROS"): rosbags rejects a ``JointState`` that rclpy
serialised with *empty* velocity/effort arrays (``CDR message size mismatch``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

# Field decoders shared with the ROS node (duck-typed, so they accept rosbags messages too).
from ..core.msgfields import (SUPPORTED_IMAGE_ENCODINGS, ImageEncodingError, camera_info_msg_to_camera,
                              compressed_image_msg_to_rgb, image_msg_to_rgb, joint_state_msg_to_positions,
                              stamp_to_ns)

__all__ = [
    "BagReadError",
    "ImageEncodingError",
    "SUPPORTED_IMAGE_ENCODINGS",
    "read_bag_messages",
    "bag_topics",
    "stamp_to_ns",
    "image_msg_to_rgb",
    "compressed_image_msg_to_rgb",
    "camera_info_msg_to_camera",
    "joint_state_msg_to_positions",
]

logger = logging.getLogger(__name__)


class BagReadError(RuntimeError):
    """A bag that cannot be read, or a requested topic that it does not contain."""


def _any_reader(path: str | os.PathLike):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    if not path.exists():
        raise BagReadError(f"bag {path} does not exist")
    return AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED))


def bag_topics(path: str | os.PathLike) -> dict[str, str]:
    """``{topic: message type}`` (e.g. ``sensor_msgs/msg/Image``) of a rosbag2 directory."""
    with _any_reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def read_bag_messages(path: str | os.PathLike, topics: Iterable[str] | None = None, *,
                      start_ns: int | None = None, stop_ns: int | None = None) -> Iterator[tuple[str, int, Any]]:
    """Iterate ``(topic, log_time_ns, message)`` over a rosbag2 directory, in log-time order.

    Args:
        path: the bag directory (with ``metadata.yaml``) or a single ``.mcap`` file.
        topics: topics to read; ``None`` reads all. A topic the bag lacks raises :class:`BagReadError`
            (listing the topics it has) before anything is yielded.
        start_ns, stop_ns: optional log-time window ``[start_ns, stop_ns)``, nanoseconds.
    Yields:
        topic name, log time in nanoseconds since the epoch, and the deserialized rosbags message.
    """
    with _any_reader(path) as reader:
        available = {c.topic for c in reader.connections}
        logger.debug("reading %s: %d messages, topics %s", path, reader.message_count, sorted(available))
        if topics is None:
            connections = list(reader.connections)
        else:
            wanted = list(dict.fromkeys(topics))
            missing = [t for t in wanted if t not in available]
            if missing:
                raise BagReadError(f"bag {path} has no topic(s) {missing}; it has {sorted(available)}")
            connections = [c for c in reader.connections if c.topic in wanted]
        for connection, stamp_ns, rawdata in reader.messages(connections=connections, start=start_ns, stop=stop_ns):
            try:
                msg = reader.deserialize(rawdata, connection.msgtype)
            except Exception as exc:  # rosbags raises assorted types for malformed CDR
                raise BagReadError(f"cannot deserialize {connection.msgtype} on {connection.topic} at "
                                   f"{stamp_ns} ns: {exc}") from exc
            yield connection.topic, int(stamp_ns), msg
