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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

# Field decoders shared with the ROS node (duck-typed, so they accept rosbags messages too).
from ..core.msgfields import (SUPPORTED_IMAGE_ENCODINGS, ImageEncodingError, camera_info_msg_to_camera,
                              compressed_image_msg_to_rgb, image_msg_to_rgb, joint_state_msg_to_positions,
                              stamp_to_ns)

__all__ = [
    "BagReadError",
    "BagInfo",
    "ImageEncodingError",
    "SUPPORTED_IMAGE_ENCODINGS",
    "read_bag_messages",
    "bag_topics",
    "bag_info",
    "stamp_to_ns",
    "image_msg_to_rgb",
    "compressed_image_msg_to_rgb",
    "camera_info_msg_to_camera",
    "joint_state_msg_to_positions",
    "IMAGE_MSGTYPES",
    "CAMERA_INFO_MSGTYPE",
    "JOINT_STATE_MSGTYPE",
]

logger = logging.getLogger(__name__)

#: image message type -> decoder (the node's own)
IMAGE_MSGTYPES = {
    "sensor_msgs/msg/Image": image_msg_to_rgb,
    "sensor_msgs/msg/CompressedImage": compressed_image_msg_to_rgb,
}
CAMERA_INFO_MSGTYPE = "sensor_msgs/msg/CameraInfo"
JOINT_STATE_MSGTYPE = "sensor_msgs/msg/JointState"


class BagReadError(RuntimeError):
    """A bag that cannot be read, or a requested topic that it does not contain."""


@dataclass(frozen=True)
class BagInfo:
    """What a bag's index says about it (no message is deserialized)."""

    path: Path
    topics: dict[str, str]  # topic -> message type, e.g. "sensor_msgs/msg/Image"
    message_counts: dict[str, int]  # topic -> number of messages
    start_ns: int  # log time of the first message in the bag (any topic), ns since the epoch
    end_ns: int  # log time of the last message

    def describe_topics(self) -> str:
        """``/a (sensor_msgs/msg/Image, 45 msgs), ...`` for error messages."""
        return ", ".join(f"{t} ({m}, {self.message_counts.get(t, 0)} msgs)" for t, m in sorted(self.topics.items())) \
            or "no topics at all"


class _OpenBag:
    """``with _OpenBag(path) as reader``: rosbags' AnyReader, with its assorted errors as :class:`BagReadError`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.reader = None

    def __enter__(self):
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        if not self.path.exists():
            raise BagReadError(f"bag {self.path} does not exist")
        try:
            self.reader = AnyReader([self.path], default_typestore=get_typestore(Stores.ROS2_KILTED))
            self.reader.open()
        except Exception as exc:  # rosbags raises AnyReaderError, but also struct/Unicode errors on garbage
            raise BagReadError(f"cannot open bag {self.path}: it is not a readable rosbag2 (mcap or sqlite3) "
                               f"recording, or it is corrupt ({type(exc).__name__}: {exc})") from exc
        return self.reader

    def __exit__(self, *exc_info):
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001 - closing a half-read corrupt file must not mask the real error
            logger.debug("error closing %s", self.path, exc_info=True)
        return False


def bag_topics(path: str | os.PathLike) -> dict[str, str]:
    """``{topic: message type}`` (e.g. ``sensor_msgs/msg/Image``) of a rosbag2 directory."""
    return dict(bag_info(path).topics)


def bag_info(path: str | os.PathLike) -> BagInfo:
    """Topics, message types, counts and the log-time span of a rosbag2 directory (or ``.mcap`` file).

    Raises:
        BagReadError: the path does not exist or is not a readable bag.
    """
    with _OpenBag(path) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        counts: dict[str, int] = {}
        for c in reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
        return BagInfo(path=Path(path), topics=topics, message_counts=counts, start_ns=int(reader.start_time),
                       end_ns=int(reader.end_time))


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
    with _OpenBag(path) as reader:
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
        messages = reader.messages(connections=connections, start=start_ns, stop=stop_ns)
        while True:
            try:
                connection, stamp_ns, rawdata = next(messages)
            except StopIteration:
                return
            except Exception as exc:  # a damaged chunk/record: rosbags raises struct, Unicode, Reader errors...
                raise BagReadError(f"bag {path} is corrupt: reading failed after the messages read so far "
                                   f"({type(exc).__name__}: {exc})") from exc
            try:
                msg = reader.deserialize(rawdata, connection.msgtype)
            except Exception as exc:  # rosbags raises assorted types for malformed CDR
                raise BagReadError(f"cannot deserialize {connection.msgtype} on {connection.topic} at "
                                   f"{stamp_ns} ns: {exc}") from exc
            yield connection.topic, int(stamp_ns), msg
