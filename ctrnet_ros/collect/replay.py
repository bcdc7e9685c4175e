"""Build a collection from a rosbag: the collector node's logic, offline (``ctrnet-collect``).

Messages are read with :mod:`ctrnet_ros.eval.bagio` (rosbags, no ROS), decoded by the node's own field
decoders (:mod:`ctrnet_ros.core.msgfields`), stamped with their *header* stamps, and fed in log-time
order through :class:`~ctrnet_ros.core.pipeline.ReplayScheduler`, which holds each image until joint
states cover its stamp (the live node's bounded wait, in recorded time). The decisions are made by
:class:`~ctrnet_ros.collect.collector.Collector`, the object the node runs, so a bag replayed here and
the same bag played into ``collector_node`` (lossless, in real time) save the same frames.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..core.camera import CameraModelError
from ..core.estimator import KeypointDetector
from ..core.msgfields import camera_info_msg_to_camera, joint_state_msg_to_positions, stamp_to_ns
from ..core.pipeline import ReplayScheduler
from ..core.robot import KeypointSpec, RobotModel, RobotModelError
from ..core.timesync import JointHistoryConfig
from ..eval.bagio import (CAMERA_INFO_MSGTYPE, IMAGE_MSGTYPES, JOINT_STATE_MSGTYPE, BagReadError, bag_info,
                          read_bag_messages)
from ..sim.bag import DEFAULT_CAMERA_INFO_TOPIC, DEFAULT_IMAGE_TOPIC, DEFAULT_JOINT_STATES_TOPIC
from .collector import Collector, Decision, DetectorMismatchError, ImageEvent
from .dataset import DEFAULT_MAX_SAMPLES, DEFAULT_QUOTA_BYTES, CollectionError, CollectionWriter
from .selection import CollectorConfig

__all__ = ["CollectInputError", "CollectResult", "collect_bag"]

logger = logging.getLogger(__name__)

_MIB = 1024 ** 2


class CollectInputError(Exception):
    """Bad input (bag, topics, robot, model, output directory); the message says what (the CLI exits 2)."""


@dataclass
class CollectResult:
    """What :func:`collect_bag` did."""

    bag: Path
    out: Path
    images: int  # image messages read
    decisions: list[Decision]  # one per image, in the order they were decided
    num_samples: int  # samples in the collection afterwards (earlier runs included)
    existing_samples: int  # samples it held before this run
    bytes_used: int  # PNG bytes of all samples
    quota_bytes: int
    full_reason: str | None  # "max_samples" / "quota" when the collection is full
    full_detail: str
    problems: list[str]  # problems found in the existing collection
    warnings: list[str] = field(default_factory=list)  # non-fatal problems met while reading the bag
    wall_s: float = 0.0

    @property
    def saved(self) -> list[Decision]:
        return [d for d in self.decisions if d.saved]

    @property
    def rejections(self) -> dict[str, int]:
        """reason -> frames, most frequent first."""
        counts: dict[str, int] = {}
        for d in self.decisions:
            if not d.saved:
                counts[d.reason] = counts.get(d.reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self) -> str:
        """A one-screen text summary."""
        saved = self.saved
        new_bytes = sum(d.sample.bytes for d in saved)
        lines = [
            f"ctrnet-collect: {self.bag} -> {self.out}",
            f"  images read:  {self.images} ({self.wall_s:.1f} s)",
            f"  saved:        {len(saved)} new samples ({new_bytes / _MIB:.1f} MiB)",
            f"  collection:   {self.num_samples} samples ({self.existing_samples} before this run), "
            f"{self.bytes_used / _MIB:.1f} MiB of the {self.quota_bytes / _MIB:.0f} MiB quota",
            f"  rejected:     {len(self.decisions) - len(saved)}",
        ]
        lines += [f"    {reason:<16}{n:>7}" for reason, n in self.rejections.items()]
        if self.full_reason:
            lines.append(f"  FULL ({self.full_reason}): {self.full_detail}")
        if self.problems:
            lines.append(f"  {len(self.problems)} problem(s) in the existing collection (skipped samples or "
                         f"orphan files), e.g.: {self.problems[0]}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _check_topics(bag: Path, image_topic: str, camera_info_topic: str, joint_states_topic: str) -> str:
    """Validate the topics; returns the image message type."""
    try:
        info = bag_info(bag)
    except BagReadError as exc:
        raise CollectInputError(str(exc)) from exc
    for topic, types, what in ((image_topic, set(IMAGE_MSGTYPES), "image"),
                               (camera_info_topic, {CAMERA_INFO_MSGTYPE}, "camera_info"),
                               (joint_states_topic, {JOINT_STATE_MSGTYPE}, "joint states")):
        if topic not in info.topics:
            alts = sorted(t for t, m in info.topics.items() if m in types)
            raise CollectInputError(f"bag {bag} has no {what} topic {topic!r}" +
                                    (f"; topics of that type: {', '.join(alts)}" if alts else "") +
                                    f". The bag has: {info.describe_topics()}")
        if info.topics[topic] not in types:
            raise CollectInputError(f"{what} topic {topic!r} carries {info.topics[topic]}, expected "
                                    f"{' or '.join(sorted(types))}")
        if info.message_counts.get(topic, 0) == 0:
            raise CollectInputError(f"{what} topic {topic!r} of bag {bag} has no messages")
    return info.topics[image_topic]


def _load_spec(robot: str | KeypointSpec) -> KeypointSpec:
    if isinstance(robot, KeypointSpec):
        return robot
    try:
        if robot.endswith((".yaml", ".yml")) or os.sep in robot:
            return KeypointSpec.from_yaml(robot)
        return KeypointSpec.builtin(robot)
    except (OSError, RobotModelError) as exc:
        raise CollectInputError(f"robot {robot!r}: {exc}") from exc


def collect_bag(
    bag: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: CollectorConfig = CollectorConfig(),
    detector: KeypointDetector | None = None,
    model: str | os.PathLike | None = None,
    backend: str = "auto",
    device: str = "cpu",
    robot: str | KeypointSpec = "panda",
    robot_model: RobotModel | None = None,
    image_topic: str = DEFAULT_IMAGE_TOPIC,
    camera_info_topic: str = DEFAULT_CAMERA_INFO_TOPIC,
    joint_states_topic: str = DEFAULT_JOINT_STATES_TOPIC,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    quota_bytes: int = DEFAULT_QUOTA_BYTES,
    joint_history: JointHistoryConfig = JointHistoryConfig(),
    max_joint_wait_s: float = 0.05,
    progress: bool = True,
) -> CollectResult:
    """Replay ``bag`` through the collector into the collection at ``out`` (created or continued).

    Args:
        bag: rosbag2 directory (mcap or sqlite3) or a single ``.mcap`` file.
        out: collection directory.
        config: selection thresholds (the node's parameters of the same names).
        detector: a keypoint detector object (tests); overrides ``model``.
        model: optional keypoint model file for the robot-in-view check (``load_detector``).
        backend, device: passed to ``load_detector``.
        robot: built-in keypoint config name, a path to one, or a spec: its keypoints' joints must be
            known at each image stamp, and its base link is recorded as the base frame.
        robot_model: an already loaded :class:`RobotModel` of the spec (saves URDF parsing).
        image_topic: ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (detected from the bag).
        camera_info_topic, joint_states_topic: the other inputs.
        max_samples, quota_bytes: the collection's limits.
        joint_history: interpolation and staleness limits (the node's).
        max_joint_wait_s: how long (recorded time) an image waits for joint states after its stamp: the
            node's ``joint_wait_s``.
        progress: tqdm progress bar on stderr.
    Raises:
        CollectInputError: unreadable bag, missing topic, bad robot config, model that cannot be loaded or
            does not fit the robot, output directory that cannot be used.
    """
    t0 = time.perf_counter()
    bag, out = Path(bag), Path(out)
    image_msgtype = _check_topics(bag, image_topic, camera_info_topic, joint_states_topic)
    spec = _load_spec(robot)
    if robot_model is None:
        try:
            robot_model = RobotModel.from_spec(spec)
        except (OSError, RobotModelError) as exc:
            raise CollectInputError(f"robot {spec.robot!r}: cannot load its URDF: {exc}") from exc
    if detector is None and model is not None:
        from ..inference import ModelLoadError, load_detector

        try:
            detector = load_detector(model, backend=backend, device=device)
        except ModelLoadError as exc:
            raise CollectInputError(str(exc)) from exc
    if detector is not None:
        try:
            Collector.check_detector(detector, spec.names)
        except DetectorMismatchError as exc:
            raise CollectInputError(f"model {model or type(detector).__name__}: {exc}") from exc
    try:
        writer = CollectionWriter(out, max_samples=max_samples, quota_bytes=quota_bytes, robot=spec.robot,
                                  base_frame=spec.base_link)
    except CollectionError as exc:
        raise CollectInputError(f"output directory: {exc}") from exc
    try:
        existing = writer.num_samples
        collector = Collector(writer, required_joints=robot_model.required_joints(spec.links), config=config,
                              detector=detector, joint_history=joint_history)
        scheduler = ReplayScheduler(collector, max_wait_s=max_joint_wait_s)
        decode = IMAGE_MSGTYPES[image_msgtype]
        decisions: list[Decision] = []
        warnings: list[str] = []
        warned: set[str] = set()

        def warn_once(key: str, message: str) -> None:
            if key not in warned:
                warned.add(key)
                logger.warning("%s", message)
                warnings.append(message)

        images = 0
        total = bag_info(bag).message_counts[image_topic]
        bar = tqdm(total=total, desc=f"collect {bag.name}", unit="frame", disable=not progress, dynamic_ncols=True)
        try:
            for topic, log_ns, msg in read_bag_messages(bag, [image_topic, camera_info_topic, joint_states_topic]):
                if topic == camera_info_topic:
                    try:
                        camera = camera_info_msg_to_camera(msg)
                    except (CameraModelError, ValueError) as exc:
                        warn_once("camera_info", f"unusable camera_info at {log_ns} ns: {exc}")
                        camera = None  # as the node: images wait for a usable one
                    scheduler.camera_info(camera)
                elif topic == joint_states_topic:
                    try:
                        positions = joint_state_msg_to_positions(msg)
                    except ValueError as exc:
                        warn_once("joint_states", f"malformed JointState at {log_ns} ns, ignored: {exc}")
                        continue
                    decisions += scheduler.joint_state(stamp_to_ns(msg.header.stamp), list(positions),
                                                       list(positions.values()))
                else:
                    images += 1
                    event = ImageEvent(frame_id=str(msg.header.frame_id), image=lambda m=msg: decode(m))
                    decisions += scheduler.image(event, stamp_to_ns(msg.header.stamp))
                    bar.update(1)
                    bar.set_postfix_str(f"saved {collector.stats.saved}", refresh=False)
            decisions += scheduler.flush()
        except BagReadError as exc:
            raise CollectInputError(str(exc)) from exc
        finally:
            bar.close()
        return CollectResult(
            bag=bag, out=out, images=images, decisions=decisions, num_samples=writer.num_samples,
            existing_samples=existing, bytes_used=writer.bytes_used, quota_bytes=writer.quota_bytes,
            full_reason=writer.full_reason, full_detail=writer.full_detail, problems=list(writer.problems),
            warnings=warnings, wall_s=time.perf_counter() - t0)
    finally:
        writer.close()
