"""The whole per-frame calibration logic, shared verbatim by the ROS node and by rosbag replay.

``CalibrationPipeline`` owns the joint-state history, the estimator and the fusion. The node feeds it
messages as they arrive; ``ctrnet-eval`` feeds it a bag's messages in bag order. Both therefore
interpolate joint states, estimate, and fuse in exactly the same way.

What to publish (``FrameResult.T_camera_base``):

* ``static`` mode: the fused pose once at least ``fusion.min_frames`` distinct configurations agree, else nothing.
  With robot meshes and a model that predicts masks, the fused keypoint pose is then refined by
  fitting the meshes' outline to the masks of many frames (:class:`~ctrnet_ros.core.silhouette.SilhouetteRefiner`),
  and the refined pose is published once a refinement passes its checks.
* ``moving`` mode: the gated, smoothed per-frame pose.
* Before any evidence (or after a reset), a calibration loaded at start-up, if one was given.

Never a pose without evidence: a frame that yields no estimate publishes nothing new.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np

from .camera import PinholeCamera
from .estimator import CameraToRobotEstimator, Estimate, EstimatorConfig
from .fusion import FusionConfig, FusionState, MovingCameraFilter, MovingFilterConfig, StaticCameraFusion
from .pnp import FrameCorrespondences
from .robot import RobotModelError
from .silhouette import RefineJob, SilhouetteFitResult, SilhouetteMesh, SilhouetteRefineConfig, SilhouetteRefiner
from .timesync import JointHistoryConfig, JointStateHistory

__all__ = ["PipelineConfig", "FrameResult", "CalibrationPipeline", "ReplayScheduler", "MODES"]

logger = logging.getLogger(__name__)

#: nice increment of the background outline-refinement process: frames (and their TF) come first, but
#: not so far first that a node whose inference saturates the CPU (the usual CPU-only case) starves the
#: fit: at +10 a 1 s fit took over 10 s in `make demo` on 2 cores; +5 is about a quarter of a busy core
_REFINE_NICE = 5


def _lower_priority() -> None:
    """Initialiser of the refinement process."""
    try:
        os.nice(_REFINE_NICE)
    except OSError:
        pass


def _run_job(job: RefineJob) -> SilhouetteFitResult:
    return job.run()

MODES = ("static", "moving")


@dataclass(frozen=True)
class PipelineConfig:
    mode: str = "static"  # "static": fuse frames into one calibration; "moving": per-frame, gated and smoothed
    joints: JointHistoryConfig = field(default_factory=JointHistoryConfig)  # interpolation and staleness limits
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)  # per-frame estimate settings
    fusion: FusionConfig = field(default_factory=FusionConfig)  # static-camera fusion and bump detection
    moving: MovingFilterConfig = field(default_factory=MovingFilterConfig)  # moving-camera gate and smoothing
    silhouette: SilhouetteRefineConfig = field(default_factory=SilhouetteRefineConfig)  # static: outline refinement

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
    source: str  # "fused", "filtered", "saved", "disputed" (an unconfirmed bump: nothing published) or "none"
    fusion: FusionState | None = None  # static mode: fusion state after this frame


class CalibrationPipeline:
    """Joint history + estimator + fusion. Thread-safety: call ``add_joint_state`` from any thread, and
    ``process``/``set_camera``/``reset`` from one worker thread."""

    def __init__(self, estimator: CameraToRobotEstimator | None, config: PipelineConfig = PipelineConfig(), *,
                 silhouette_mesh: SilhouetteMesh | None = None, refine_in_background: bool = False):
        #: may be None until a robot model and detector exist (set it before :meth:`process`); swapping
        #: it (model reload) keeps the joint history and the fused frames
        self.estimator = estimator
        self.config = config
        self.joints = JointStateHistory(config.joints)
        self.camera: PinholeCamera | None = None
        self._fusion: StaticCameraFusion | None = None
        self._moving = MovingCameraFilter(config.moving)
        self._saved: tuple[np.ndarray, np.ndarray | None] | None = None
        self._refiner: SilhouetteRefiner | None = None
        self._refiner_segment = -1
        # Outline refinements take up to seconds: a live node runs them in a low-priority process (a
        # thread would hold the GIL the frame worker needs, and at low priority hold it for long) and
        # takes the result at a later frame; replay runs them in line (deterministic).
        self._background = bool(refine_in_background)
        self._executor: ProcessPoolExecutor | None = None
        self._job: tuple[RefineJob, Future] | None = None
        self.set_silhouette_mesh(silhouette_mesh)

    def close(self) -> None:
        """Stop the background refinement process (a running fit is abandoned)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._job = None

    def set_silhouette_mesh(self, mesh: SilhouetteMesh | None) -> None:
        """Robot meshes for the outline refinement (static mode); None turns it off. Its links must be
        links of the estimator's robot model. Forgets the frames kept for it."""
        use = mesh is not None and self.config.mode == "static" and self.config.silhouette.enabled
        self._refiner = SilhouetteRefiner(mesh, self.config.silhouette) if use else None
        self._refiner_segment = -1
        self._job = None  # a running fit belongs to the old refiner: its result is dropped

    @property
    def refiner(self) -> SilhouetteRefiner | None:
        return self._refiner

    @property
    def refine_running(self) -> int:
        """Frames in the background outline fit running now (0: none running)."""
        job = self._job
        return 0 if job is None or job[1].done() else len(job[0].observations)

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
        if self._refiner is not None:
            self._refiner.reset()

    def joints_cover(self, stamp_ns: int) -> bool:
        """Joint states needed for the keypoints exist at or after ``stamp_ns`` (interpolation possible)."""
        return self.joints.covers(stamp_ns, self.estimator.required_joints)

    def wait_for_joints(self, stamp_ns: int, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until :meth:`joints_cover` (for a live node's worker thread)."""
        return self.joints.wait_covered(stamp_ns, self.estimator.required_joints, timeout_s)

    @property
    def fusion_state(self) -> FusionState | None:
        return None if self._fusion is None else self._refined(self._fusion.state())

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
                joint_vector = np.array([positions[j] for j in required])
                state = self._fusion.update(corr, joint_vector, single=est.pnp, stamp_ns=stamp_ns)
                self._refine(est, state, stamp_ns, joint_vector)
            else:
                self._moving.update(est.pnp)
        elif self.config.mode == "static":
            state = self._fusion.state()
        if state is not None:
            state = self._refined(state)
        return self._result(est, state)

    def _refine(self, est: Estimate, state: FusionState, stamp_ns: int, joint_vector: np.ndarray) -> None:
        """Keep this frame's mask for the outline refinement, and refine when due (static mode)."""
        refiner = self._refiner
        if refiner is None:
            return
        if self._job is not None and self._job[1].done():
            job, future = self._job
            self._job = None
            try:
                refiner.finish(job, future.result())
            except Exception as exc:  # a failed fit must not stop the calibration: report it
                refiner.last_detail = f"outline fit failed: {type(exc).__name__}: {exc}"
                logger.warning("%s", refiner.last_detail)
                if isinstance(exc, BrokenProcessPool):
                    self._executor = None  # the next fit starts a new process
        if state.segment != self._refiner_segment:  # a reset or a bump: the old masks saw another camera pose
            refiner.reset()
            self._refiner_segment = state.segment
        if est.mask is None or not state.agreed or est.input_transform is None:
            return
        t0 = time.perf_counter()
        robot = self.estimator.robot
        links = refiner.mesh.links
        needed = {link: robot.chain_joints(link) for link in links}
        query = self.joints.at(stamp_ns, sorted({j for js in needed.values() for j in js}))
        valid = np.array([all(j in query.positions for j in needed[link]) for link in links])
        if not valid.any():
            return
        try:
            poses = robot.link_poses(query.positions, links=[l for l, ok in zip(links, valid) if ok])
        except RobotModelError:
            return
        T_base_link = np.stack([poses.get(l, np.eye(4)) for l in links])
        refiner.add(est.mask, self.camera, est.input_transform, T_base_link, joint_vector,
                    link_valid=None if valid.all() else valid)
        if refiner.due() and state.T_camera_base is not None and self._job is None:
            job = refiner.start(state.T_camera_base)
            if self._background:
                if self._executor is None:
                    # spawn, not fork: the node's process holds DDS threads that a fork must not copy
                    self._executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                         initializer=_lower_priority)
                try:
                    self._job = (job, self._executor.submit(_run_job, job))
                except BrokenProcessPool as exc:  # the process died (killed, out of memory): start another
                    logger.warning("outline refinement process lost (%s); starting a new one", exc)
                    self._executor = None
            else:
                refiner.finish(job, job.run())
        est.timings_ms["silhouette"] = (time.perf_counter() - t0) * 1e3

    def _refined(self, state: FusionState) -> FusionState:
        """``state`` with the outline-refined pose in place of the keypoint pose, when there is one."""
        refiner = self._refiner
        if refiner is None or state.T_camera_base is None or self._refiner_segment != state.segment:
            return state
        if refiner.pose is None:
            return dataclasses.replace(state, refine_detail=refiner.last_detail)
        out = dataclasses.replace(state, T_camera_base=refiner.pose.T_camera_base,
                                  covariance=refiner.pose.covariance, refined=True, refine_detail=refiner.last_detail)
        out.converged = self._fusion.is_converged(out)
        return out

    def _result(self, est: Estimate, state: FusionState | None) -> FrameResult:
        T, cov, source = None, None, "none"
        if self.config.mode == "static" and state is not None and state.disputed:
            # The newest evidence contradicts the fused pose (a bump not yet confirmable): publish nothing.
            return FrameResult(stamp_ns=est.stamp_ns, estimate=est, T_camera_base=None, covariance=None,
                               source="disputed", fusion=state)
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
