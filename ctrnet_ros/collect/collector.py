"""The collector's per-frame logic, shared verbatim by ``collector_node`` and ``ctrnet-collect``.

:class:`Collector` owns the joint-state history (the calibration node's
:class:`~ctrnet_ros.core.timesync.JointStateHistory`, with the same staleness rules), the selection checks
(:mod:`ctrnet_ros.collect.selection`) and a :class:`~ctrnet_ros.collect.dataset.CollectionWriter`. The
node feeds it messages as they arrive; ``ctrnet-collect`` feeds it a bag's messages through the
calibration pipeline's :class:`~ctrnet_ros.core.pipeline.ReplayScheduler` (which holds each image until
joint states cover its stamp). Both therefore save exactly the same frames.

Per image, cheapest check first::

    limits (max_samples, quota) -> rate -> camera_info -> joints at the stamp -> novelty
    -> decode -> image size vs camera_info -> sharpness -> model (confidence, mask) -> write

A rejected frame yields a :class:`Decision` with a reason tag (:data:`~ctrnet_ros.collect.selection.REASONS`)
and a sentence; nothing is raised for bad data. A write that fails (disk full) is a ``write_error``
decision: the frame is lost, the collection is intact, and the collector keeps going.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np

from ..core.camera import PinholeCamera
from ..core.estimator import KeypointDetector
from ..core.msgfields import ImageEncodingError
from ..core.timesync import JointHistoryConfig, JointStateHistory
from .dataset import CollectedSample, CollectionLimitError, CollectionWriteError, CollectionWriter
from .selection import (CollectorConfig, JointNovelty, Rejection, StampRateLimiter, check_detection, check_sharpness,
                        detection_quality, sharpness)

__all__ = ["Collector", "CollectorStats", "Decision", "ImageEvent", "ImageSource", "DetectorMismatchError"]

#: An RGB image, or a function that decodes one (called only once the cheap checks have passed).
ImageSource = Union[np.ndarray, Callable[[], np.ndarray]]


class DetectorMismatchError(ValueError):
    """The model's keypoints are not the robot keypoint spec's."""


@dataclass(frozen=True)
class ImageEvent:
    """An image as :class:`~ctrnet_ros.core.pipeline.ReplayScheduler` holds it for :meth:`Collector.process`."""

    frame_id: str  # image header frame_id
    image: ImageSource  # (H, W, 3) uint8 RGB, or a decoder returning it (may raise ImageEncodingError)


@dataclass(frozen=True)
class Decision:
    """What the collector did with one image."""

    stamp_ns: int
    saved: bool
    reason: str | None = None  # None when saved, else a tag from selection.REASONS
    detail: str = ""  # human-readable explanation
    sample: CollectedSample | None = None  # the saved sample
    joint_distance: float = math.nan  # rad, to the nearest previously saved sample (inf: the first)
    sharpness: float = math.nan
    confidence: float | None = None  # median keypoint confidence (with a model)


class CollectorStats:
    """Thread-safe counters of one collector run (the node's diagnostics, the CLI's summary)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.offered = 0  # images offered
        self.saved = 0  # samples saved in this run
        self.saved_bytes = 0  # their PNG bytes
        self.rejections: Counter[str] = Counter()  # reason tag -> frames
        self.last_detail_by_reason: dict[str, str] = {}  # reason tag -> detail of its newest frame
        self.last_reason: str | None = None  # of the newest frame; None when it was saved
        self.last_detail = ""
        self.last_error = ""  # newest write error, kept after later successes
        self.write_failing = False  # the newest write attempt failed (disk full...); cleared by a save
        self.joint_messages = 0
        self.nan_joint_samples = 0

    def record(self, decision: Decision) -> None:
        with self._lock:
            self.offered += 1
            self.last_reason, self.last_detail = decision.reason, decision.detail
            if decision.saved:
                self.saved += 1
                self.saved_bytes += decision.sample.bytes
                self.write_failing = False
            else:
                self.rejections[decision.reason] += 1
                self.last_detail_by_reason[decision.reason] = decision.detail
                if decision.reason == "write_error":
                    self.last_error, self.write_failing = decision.detail, True

    def joints_received(self, nan_samples: int) -> None:
        with self._lock:
            self.joint_messages += 1
            self.nan_joint_samples += nan_samples

    def snapshot(self) -> dict:
        """A consistent copy of the counters."""
        with self._lock:
            return {"offered": self.offered, "saved": self.saved, "saved_bytes": self.saved_bytes,
                    "rejections": dict(self.rejections), "last_detail_by_reason": dict(self.last_detail_by_reason),
                    "last_reason": self.last_reason,
                    "last_detail": self.last_detail, "last_error": self.last_error,
                    "write_failing": self.write_failing,
                    "joint_messages": self.joint_messages, "nan_joint_samples": self.nan_joint_samples}


class Collector:
    """Joint history + selection + writer (see the module docstring).

    Args:
        writer: the open collection; its existing samples seed the novelty filter and the rate limiter.
        required_joints: the joints the keypoints depend on (``RobotModel.required_joints(spec.links)``):
            they must all be known at the image stamp, and novelty is measured over them.
        config: selection thresholds.
        detector: optional keypoint model for the robot-in-view check; None skips that check.
        joint_history: interpolation and staleness limits (the calibration node's).
    Thread-safety: :meth:`add_joint_state` and :meth:`set_camera` from any thread; :meth:`offer` /
    :meth:`process` from one worker thread.
    """

    def __init__(self, writer: CollectionWriter, *, required_joints: Sequence[str],
                 config: CollectorConfig = CollectorConfig(), detector: KeypointDetector | None = None,
                 joint_history: JointHistoryConfig = JointHistoryConfig()):
        if not required_joints:
            raise ValueError("required_joints must name at least one joint")
        self.writer = writer
        self.required_joints = list(required_joints)
        self.config = config
        self.detector = detector
        self.joints = JointStateHistory(joint_history)
        self.stats = CollectorStats()
        self._camera: PinholeCamera | None = None
        self._camera_lock = threading.Lock()
        self.novelty = JointNovelty(self.required_joints, config.min_joint_distance)
        skipped = 0
        for s in writer.samples:
            q = self.novelty.vector(s.joints)
            if q is None:
                skipped += 1
            else:
                self.novelty.add(q)
        #: existing samples that lack a required joint (another robot?): not used for novelty
        self.skipped_existing = skipped
        last = max((s.stamp_ns for s in writer.samples), default=None)
        self.rate = StampRateLimiter(config.max_rate_hz, last_saved_ns=last)

    @staticmethod
    def check_detector(detector: KeypointDetector, keypoint_names: Sequence[str]) -> None:
        """Raise :class:`DetectorMismatchError` unless the model's keypoints are ``keypoint_names`` in order."""
        if list(detector.keypoint_names) != list(keypoint_names):
            raise DetectorMismatchError(f"model keypoints {list(detector.keypoint_names)} do not match the robot "
                                        f"keypoint spec {list(keypoint_names)} (same names, same order)")

    # -- inputs -----------------------------------------------------------------------------------
    def set_camera(self, camera: PinholeCamera | None) -> None:
        """Use these intrinsics for the following images (None: camera_info became unusable)."""
        with self._camera_lock:
            self._camera = camera

    @property
    def camera(self) -> PinholeCamera | None:
        with self._camera_lock:
            return self._camera

    def add_joint_state(self, stamp_ns: int, names, positions) -> list[str]:
        """Record a JointState; returns the names of rejected (non-finite) entries (ValueError if malformed)."""
        bad = self.joints.add(stamp_ns, names, positions)
        self.stats.joints_received(len(bad))
        return bad

    def joints_cover(self, stamp_ns: int) -> bool:
        """Joint states for every required joint exist at or after ``stamp_ns`` (interpolation possible)."""
        return self.joints.covers(stamp_ns, self.required_joints)

    def wait_for_joints(self, stamp_ns: int, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until :meth:`joints_cover` (a live node's worker thread)."""
        return self.joints.wait_covered(stamp_ns, self.required_joints, timeout_s)

    # -- per frame ----------------------------------------------------------------------------------
    def process(self, event: ImageEvent, stamp_ns: int) -> Decision:
        """:class:`~ctrnet_ros.core.pipeline.ReplayScheduler`'s hook: :meth:`offer` an :class:`ImageEvent`."""
        return self.offer(event.image, stamp_ns=stamp_ns, frame_id=event.frame_id)

    def offer(self, image: ImageSource, *, stamp_ns: int, frame_id: str) -> Decision:
        """Decide about one image (stamped ``stamp_ns``) and save it if it adds information."""
        decision = self._decide(image, int(stamp_ns), str(frame_id))
        self.stats.record(decision)
        return decision

    def _decide(self, image: ImageSource, stamp_ns: int, frame_id: str) -> Decision:
        cfg, writer = self.config, self.writer

        def reject(r: Rejection, **measured) -> Decision:
            return Decision(stamp_ns=stamp_ns, saved=False, reason=r.reason, detail=r.detail, **measured)

        if writer.full_reason is not None:
            return reject(Rejection(writer.full_reason, writer.full_detail))
        r = self.rate.check(stamp_ns)
        if r is not None:
            return reject(r)
        camera = self.camera
        if camera is None:
            return reject(Rejection("no_camera_info", "no usable camera_info received yet"))
        # The sample keeps every joint known at the stamp (the gripper too: it shapes the silhouette);
        # the keypoints' joints must all be there.
        names = list(dict.fromkeys(self.required_joints + self.joints.joint_names))
        query = self.joints.at(stamp_ns, names)
        problems = query.describe(self.required_joints)
        q = None if problems else self.novelty.vector(query.positions)
        if q is None:
            return reject(Rejection("joint_states", "joint states at the image stamp: " +
                                    (problems or "a required joint is missing")))
        dist, r = self.novelty.check(q)
        if r is not None:
            return reject(r, joint_distance=dist)
        try:
            rgb = image() if callable(image) else image
            rgb = np.asarray(rgb)
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ImageEncodingError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        except ImageEncodingError as exc:
            return reject(Rejection("bad_image", str(exc)), joint_distance=dist)
        if (rgb.shape[1], rgb.shape[0]) != (camera.width, camera.height):
            return reject(Rejection("camera_mismatch", f"image is {rgb.shape[1]}x{rgb.shape[0]} but camera_info says "
                                                       f"{camera.width}x{camera.height}"), joint_distance=dist)
        sharp = sharpness(rgb, width=cfg.sharpness_width)
        r = check_sharpness(sharp, cfg)
        if r is not None:
            return reject(r, joint_distance=dist, sharpness=sharp)
        confidence = fraction = None
        if self.detector is not None:
            tf = camera.letterbox_transform(*self.detector.input_size)
            det = self.detector.detect(tf.apply_image(rgb))
            confidence, fraction = detection_quality(det, tf, camera)
            r = check_detection(confidence, fraction, cfg)
            if r is not None:
                return reject(r, joint_distance=dist, sharpness=sharp, confidence=confidence)
        try:
            sample = writer.save(rgb, stamp_ns=stamp_ns, frame_id=frame_id, camera=camera, joints=query.positions,
                                 sharpness=sharp, confidence=confidence, mask_fraction=fraction)
        except CollectionLimitError as exc:
            return reject(Rejection(exc.reason, str(exc)), joint_distance=dist, sharpness=sharp,
                          confidence=confidence)
        except CollectionWriteError as exc:
            return reject(Rejection("write_error", str(exc)), joint_distance=dist, sharpness=sharp,
                          confidence=confidence)
        self.novelty.add(q)
        self.rate.record(stamp_ns)
        return Decision(stamp_ns=stamp_ns, saved=True, sample=sample, joint_distance=dist, sharpness=sharp,
                        confidence=confidence)
