"""The whole per-frame calibration logic, shared verbatim by the ROS node and by rosbag replay.

``CalibrationPipeline`` owns the joint-state history, the estimator and the fusion. The node feeds it
messages as they arrive; ``ctrnet-eval`` feeds it a bag's messages in bag order. Both therefore
interpolate joint states, estimate, and fuse in exactly the same way.

What to publish (``FrameResult.T_camera_base``):

* ``static`` mode: the fused pose once at least ``fusion.min_frames`` diverse frames agree, else nothing.
* ``moving`` mode: the gated, smoothed per-frame pose.
* Before any evidence (or after a reset), a calibration loaded at start-up, if one was given.

Never a pose without evidence: a frame that yields no estimate publishes nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import PinholeCamera
from .estimator import CameraToRobotEstimator, Estimate, EstimatorConfig
from .fusion import FusionConfig, FusionState, MovingCameraFilter, MovingFilterConfig, StaticCameraFusion
from .pnp import FrameCorrespondences
from .timesync import JointHistoryConfig, JointStateHistory

__all__ = ["PipelineConfig", "FrameResult", "CalibrationPipeline", "ReplayScheduler", "MODES"]

MODES = ("static", "moving")


@dataclass(frozen=True)
class PipelineConfig:
    mode: str = "static"  # "static": fuse frames into one calibration; "moving": per-frame, gated and smoothed
    joints: JointHistoryConfig = field(default_factory=JointHistoryConfig)  # interpolation and staleness limits
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)  # per-frame estimate settings
    fusion: FusionConfig = field(default_factory=FusionConfig)  # static-camera fusion and bump detection
    moving: MovingFilterConfig = field(default_factory=MovingFilterConfig)  # moving-camera gate and smoothing

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


@dataclass
class FrameResult:
    """What one image produced."""

    stamp_ns: int
    estimate: Estimate  # the per-frame estimate (ok or with a reason)
    T_camera_base: np.ndarray | None  # (4, 4) pose to publish now, or None: publish nothing
    covariance: np.ndarray | None  # (6, 6) of T_camera_base (core.pnp convention), if known
    source: str  # "fused", "filtered", "saved" or "none"
    fusion: FusionState | None = None  # static mode: fusion state after this frame


class CalibrationPipeline:
    """Joint history + estimator + fusion. Thread-safety: call ``add_joint_state`` from any thread, and
    ``process``/``set_camera``/``reset`` from one worker thread."""

    def __init__(self, estimator: CameraToRobotEstimator | None, config: PipelineConfig = PipelineConfig()):
        #: may be None until a robot model and detector exist (set it before :meth:`process`); swapping
        #: it (model reload) keeps the joint history and the fused frames
        self.estimator = estimator
        self.config = config
        self.joints = JointStateHistory(config.joints)
        self.camera: PinholeCamera | None = None
        self._fusion: StaticCameraFusion | None = None
        self._moving = MovingCameraFilter(config.moving)
        self._saved: tuple[np.ndarray, np.ndarray | None] | None = None

    # -- inputs ---------------------------------------------------------------------------------
    def add_joint_state(self, stamp_ns: int, names, positions) -> list[str]:
        """Record a JointState; returns the names of rejected (non-finite) entries."""
        return self.joints.add(stamp_ns, names, positions)

    def set_camera(self, camera: PinholeCamera) -> bool:
        """Use new intrinsics. Returns True when they changed (fusion restarts: old frames no longer apply)."""
        if self.camera is None:
            self.camera = camera
            self._fusion = StaticCameraFusion(camera, self.config.fusion)
            return True
        changed = self._fusion.set_camera(camera)
        self.camera = camera
        if changed:
            self._moving.reset()
        return changed

    def reset(self, *, T_camera_base=None, covariance=None) -> None:
        """Forget all frames; optionally start from a saved calibration (published until evidence replaces it)."""
        self._saved = None if T_camera_base is None else (np.asarray(T_camera_base, dtype=np.float64),
                                                           None if covariance is None else np.asarray(covariance))
        if self._fusion is not None:
            self._fusion.reset()
        self._moving.reset()

    def joints_cover(self, stamp_ns: int) -> bool:
        """Joint states needed for the keypoints exist at or after ``stamp_ns`` (interpolation possible)."""
        return self.joints.covers(stamp_ns, self.estimator.required_joints)

    def wait_for_joints(self, stamp_ns: int, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until :meth:`joints_cover` (for a live node's worker thread)."""
        return self.joints.wait_covered(stamp_ns, self.estimator.required_joints, timeout_s)

    @property
    def fusion_state(self) -> FusionState | None:
        return None if self._fusion is None else self._fusion.state()

    # -- per frame ------------------------------------------------------------------------------
    def process(self, image_rgb: np.ndarray, stamp_ns: int, *, prepared=None) -> FrameResult:
        """Estimate from one image (stamped ``stamp_ns``), update fusion, and say what to publish.

        ``prepared``: the estimator's :meth:`~CameraToRobotEstimator.detect` of this image, when the
        caller ran the network earlier (the node does, while joint states are still arriving).
        """
        if self.camera is None:
            est = Estimate(stamp_ns=stamp_ns, ok=False, reason="no_camera_info",
                           detail="no camera_info received yet; cannot use images without intrinsics")
            return self._result(est, None)
        required = self.estimator.required_joints
        query = self.joints.at(stamp_ns, required)
        problems = query.describe(required)
        positions = None if problems else query.positions
        if problems:
            problems = "joint states at the image stamp: " + problems
        est = self.estimator.estimate(image_rgb, self.camera, positions, stamp_ns=stamp_ns, joint_problem=problems,
                                      prepared=prepared)
        state = None
        if est.ok:
            if self.config.mode == "static":
                # Only the frame's own PnP inliers enter fusion: a keypoint that disagrees with its
                # own frame's pose is a detection error, not evidence.
                inl = est.pnp.inliers
                corr = FrameCorrespondences(points_base=est.keypoints_base,
                                            pixels=np.where(inl[:, None], est.keypoints_uv, np.nan),
                                            weights=np.where(inl, est.confidence, 0.0))
                state = self._fusion.update(corr, np.array([positions[j] for j in required]), single=est.pnp,
                                            stamp_ns=stamp_ns)
            else:
                self._moving.update(est.pnp)
        elif self.config.mode == "static":
            state = self._fusion.state()
        return self._result(est, state)

    def _result(self, est: Estimate, state: FusionState | None) -> FrameResult:
        T, cov, source = None, None, "none"
        if self.config.mode == "static" and state is not None and state.T_camera_base is not None:
            T, cov, source = state.T_camera_base, state.covariance, "fused"
        elif self.config.mode == "moving" and self._moving.pose is not None:
            T, cov, source = self._moving.pose, (est.pnp.covariance if est.ok else None), "filtered"
        if T is not None:
            self._saved = None  # evidence replaces a loaded calibration for good
        elif self._saved is not None:
            (T, cov), source = self._saved, "saved"
        return FrameResult(stamp_ns=est.stamp_ns, estimate=est, T_camera_base=T, covariance=cov, source=source,
                           fusion=state)


class ReplayScheduler:
    """Feeds a pipeline recorded messages in bag order, holding each image until joint states cover it.

    A live node waits (briefly) for the joint states that follow an image's stamp; in a bag they are
    simply later in the file. So an image is processed once a joint state at or after its stamp has
    been fed, or once it has waited ``max_wait_s`` of *recorded* time (a newer image arrived that
    much later), or at :meth:`flush`. Then the pipeline's usual staleness rules decide.

    Args:
        pipeline: the shared :class:`CalibrationPipeline`, or any object with its four input methods
            (``set_camera``, ``add_joint_state``, ``joints_cover``, ``process(image, stamp_ns)``): the
            image collector (:class:`ctrnet_ros.collect.collector.Collector`) is fed the same way. The
            held ``image`` is passed to ``process`` as it was given; only its stamp is looked at here.
        max_wait_s: the node's ``max_joint_wait_s`` equivalent, in recorded time.
        max_pending: bound on held images (memory); the oldest is processed when exceeded.
    """

    def __init__(self, pipeline: CalibrationPipeline, *, max_wait_s: float = 0.1, max_pending: int = 16):
        self.pipeline = pipeline
        self.max_wait_ns = int(max_wait_s * 1e9)
        self.max_pending = max_pending
        self._pending: list[tuple[int, np.ndarray]] = []

    def camera_info(self, camera: PinholeCamera) -> bool:
        return self.pipeline.set_camera(camera)

    def joint_state(self, stamp_ns: int, names, positions) -> list[FrameResult]:
        self.pipeline.add_joint_state(stamp_ns, names, positions)
        return self._drain()

    def image(self, image_rgb: np.ndarray, stamp_ns: int) -> list[FrameResult]:
        self._pending.append((stamp_ns, image_rgb))
        self._pending.sort(key=lambda p: p[0])
        return self._drain(newest_ns=stamp_ns)

    def flush(self) -> list[FrameResult]:
        out = [self.pipeline.process(img, t) for t, img in self._pending]
        self._pending.clear()
        return out

    def _drain(self, newest_ns: int | None = None) -> list[FrameResult]:
        out = []
        while self._pending:
            t, img = self._pending[0]
            waited_out = newest_ns is not None and newest_ns - t > self.max_wait_ns
            if self.pipeline.joints_cover(t) or waited_out or len(self._pending) > self.max_pending:
                self._pending.pop(0)
                out.append(self.pipeline.process(img, t))
            else:
                break
        return out
