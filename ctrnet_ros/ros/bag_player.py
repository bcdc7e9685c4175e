"""``ctrnet-play``: replay a rosbag2's camera and joint-state topics through rclpy, without ``ros2 bag``.

    ctrnet-play build/demo/bag_static                  # real time, all supported topics
    ctrnet-play BAG --rate 0.5 --topics /camera/color/image_raw /camera/color/camera_info /joint_states
    ctrnet-play BAG --clock                            # also /clock, for nodes with use_sim_time:=true

Messages keep their recorded header stamps and are paced by their *log* time divided by ``--rate``.
The bag is read with ``rosbags`` (no ROS needed for that) and each message is copied field by field
into the rclpy message class of the same type. Reading and conversion run one step ahead in a thread
with a small bounded queue, so a 640x480 stream stays on schedule without loading the bag into memory.

With ``--clock``, ``rosgraph_msgs/Clock`` carrying the bag's log time is published before every
message (joint states make that >= 100 Hz), the way ``ros2 bag play --clock`` drives sim time.
"""

from __future__ import annotations

import argparse
import array
import importlib
import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = ["SUPPORTED_TYPES", "BagPlayer", "PlaybackSummary", "rclpy_message_class", "to_rclpy_message", "main"]

_LOG = logging.getLogger(__name__)

#: message types the player publishes by default (others are listed and skipped)
SUPPORTED_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
                   "sensor_msgs/msg/JointState")

#: IDL element type -> array.array typecode, for fast bulk assignment of numeric sequences
_TYPECODES = {"double": "d", "float": "f", "int8": "b", "uint8": "B", "octet": "B", "int16": "h",
              "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q"}


def rclpy_message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy class ``sensor_msgs.msg.Image``."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _convert_value(value, field_type: str):
    if "/" in field_type:  # nested message, or a sequence/array of them
        inner = field_type.split("<", 1)[1].rstrip(">").split(",")[0] if field_type.startswith("sequence<") \
            else field_type.split("[", 1)[0]
        if inner != field_type:  # collection
            cls = rclpy_message_class(_with_msg(inner))
            return [to_rclpy_message(v, cls) for v in value]
        return to_rclpy_message(value, rclpy_message_class(_with_msg(field_type)))
    if isinstance(value, np.ndarray):
        if field_type.startswith("sequence<"):
            element = field_type[len("sequence<"):].split(",")[0].rstrip(">")
            code = _TYPECODES.get(element)
            if code is not None:  # array.array is ~30x faster than letting rclpy iterate a numpy array
                return array.array(code, np.ascontiguousarray(value, dtype=np.dtype(code)).tobytes())
            return value.tolist()
        return value  # fixed-size arrays are numpy arrays in rclpy too
    return value


def _with_msg(t: str) -> str:
    """``std_msgs/Header`` -> ``std_msgs/msg/Header``."""
    parts = t.split("/")
    return t if len(parts) == 3 else f"{parts[0]}/msg/{parts[1]}"


def to_rclpy_message(msg, cls):
    """Copy a message with the same fields (e.g. a rosbags dataclass) into an instance of rclpy class ``cls``."""
    out = cls()
    for name, field_type in cls.get_fields_and_field_types().items():
        setattr(out, name, _convert_value(getattr(msg, name), field_type))
    return out


@dataclass
class PlaybackSummary:
    published: dict[str, int] = field(default_factory=dict)  # topic -> messages published
    duration_s: float = 0.0  # wall time of the playback
    bag_duration_s: float = 0.0  # log-time span of what was played
    max_lag_s: float = 0.0  # worst delay behind schedule (conversion or publishing too slow)


class BagPlayer:
    """Publishes a bag's messages on their own topics, paced by log time.

    Args:
        node: an rclpy node to create the publishers on (the player never spins it).
        bag: rosbag2 directory (or ``.mcap`` file).
        rate: playback speed factor (2.0 = twice as fast).
        topics: topics to play (default: every topic of a :data:`SUPPORTED_TYPES` type).
        clock: also publish ``/clock`` with the bag's log time.
        on_publish: ``f(topic, message, wall_time_s)`` called right after each publish (``time.time()``).
    """

    def __init__(self, node, bag, *, rate: float = 1.0, topics: Sequence[str] | None = None, clock: bool = False,
                 on_publish: Callable[[str, Any, float], None] | None = None, qos_depth: int = 100):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from ..eval.bagio import BagReadError, bag_topics

        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.bag, self.rate, self.on_publish = bag, float(rate), on_publish
        available = bag_topics(bag)
        if topics is None:
            topics = [t for t, ty in available.items() if ty in SUPPORTED_TYPES]
            skipped = sorted(set(available) - set(topics))
            if skipped:
                _LOG.info("not playing topics of unsupported types: %s", ", ".join(skipped))
        missing = [t for t in topics if t not in available]
        if missing:
            raise BagReadError(f"bag {bag} has no topic(s) {missing}; it has {sorted(available)}")
        if not topics:
            raise BagReadError(f"bag {bag} has none of the supported message types {SUPPORTED_TYPES}")
        self.topics = list(topics)
        qos = QoSProfile(depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        self._classes = {t: rclpy_message_class(available[t]) for t in self.topics}
        self.publishers = {t: node.create_publisher(self._classes[t], t, qos) for t in self.topics}
        self._clock_pub = self._clock_cls = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self._clock_pub = node.create_publisher(Clock, "/clock", 10)
        self._stop = threading.Event()

    def wait_for_subscribers(self, timeout_s: float, topics: Iterable[str] | None = None) -> bool:
        """Wait until each of ``topics`` (default: all played) has a matched subscriber. False on timeout."""
        topics = list(self.topics if topics is None else topics)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.publishers[t].get_subscription_count() > 0 for t in topics):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Ask a running :meth:`play` to return after the current message."""
        self._stop.set()

    def _reader(self, out: queue.Queue) -> None:
        from ..eval.bagio import read_bag_messages

        try:
            for topic, log_ns, msg in read_bag_messages(self.bag, self.topics):
                if self._stop.is_set():
                    break
                out.put((topic, log_ns, to_rclpy_message(msg, self._classes[topic])))
        except BaseException as exc:  # hand the failure to the publishing thread
            out.put(exc)
        out.put(None)

    def play(self) -> PlaybackSummary:
        """Publish everything (blocking). Returns counts and timing."""
        summary = PlaybackSummary(published={t: 0 for t in self.topics})
        pending: queue.Queue = queue.Queue(maxsize=32)  # bounded: read ahead, never the whole bag
        reader = threading.Thread(target=self._reader, args=(pending,), name="bag_reader", daemon=True)
        reader.start()
        first_ns = last_ns = None
        t0 = time.monotonic()
        try:
            while not self._stop.is_set():
                item = pending.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                topic, log_ns, msg = item
                if first_ns is None:
                    first_ns, t0 = log_ns, time.monotonic()
                due = t0 + (log_ns - first_ns) * 1e-9 / self.rate
                lag = time.monotonic() - due
                if lag < 0:
                    time.sleep(-lag)
                else:
                    summary.max_lag_s = max(summary.max_lag_s, lag)
                if self._clock_pub is not None:
                    clock_msg = self._clock_cls()
                    clock_msg.clock.sec, clock_msg.clock.nanosec = log_ns // 10**9, log_ns % 10**9
                    self._clock_pub.publish(clock_msg)
                self.publishers[topic].publish(msg)
                if self.on_publish is not None:
                    self.on_publish(topic, msg, time.time())
                summary.published[topic] += 1
                last_ns = log_ns
        finally:
            self._stop.set()
            while reader.is_alive():  # unblock a reader waiting on a full queue
                try:
                    pending.get_nowait()
                except queue.Empty:
                    reader.join(timeout=0.05)
        summary.duration_s = time.monotonic() - t0
        summary.bag_duration_s = 0.0 if first_ns is None else (last_ns - first_ns) * 1e-9
        return summary


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ctrnet-play", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", help="rosbag2 directory (or .mcap file)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--topics", nargs="+", default=None, help="topics to play (default: all supported ones)")
    p.add_argument("--clock", action="store_true", help="publish /clock with the bag's log time")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                   help="before playing, wait up to this long for every topic to have a subscriber")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import rclpy
    from rclpy.utilities import remove_ros_args

    from .entry_point import run_node

    argv = list(sys.argv if argv is None else argv)
    args = _parse_args(remove_ros_args(argv)[1:])
    logging.basicConfig(level=logging.INFO, format="[ctrnet-play] %(message)s")
    return run_node(lambda: rclpy.create_node("ctrnet_player"), argv=argv, run=lambda node: _play(node, args))


def _play(node, args: argparse.Namespace) -> int:
    """Play the bag of ``args`` through ``node``; 2 when the bag cannot be played."""
    from ..eval.bagio import BagReadError

    try:
        player = BagPlayer(node, args.bag, rate=args.rate, topics=args.topics, clock=args.clock)
    except (BagReadError, ValueError) as exc:
        _LOG.error("%s", exc)
        return 2
    if args.wait_for_subscribers > 0 and not player.wait_for_subscribers(args.wait_for_subscribers):
        _LOG.warning("not every topic has a subscriber after %.1f s; playing anyway", args.wait_for_subscribers)
    summary = player.play()
    _LOG.info("played %s in %.1f s (bag span %.1f s, worst lag %.0f ms)",
              ", ".join(f"{t}: {n}" for t, n in summary.published.items()), summary.duration_s,
              summary.bag_duration_s, summary.max_lag_s * 1e3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
