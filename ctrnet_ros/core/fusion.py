"""Many frames -> one calibration (static camera), bump detection; smoothing for a moving camera.

Static camera
    A fixed camera sees one ``T_camera_base`` while the robot moves. We keep a window of frames
    with *diverse* joint configurations (a new frame too close in joint space to a kept one is
    skipped) and solve one multi-frame PnP over all of them
    (:func:`~ctrnet_ros.core.pnp.solve_pnp_multiframe`, started from the current estimate).

    A fused pose is reported only once ``min_frames`` *distinct* configurations agree on it. One
    configuration seen many times is one piece of evidence: its keypoints can fit a mirrored pose
    metres away as well as the true one (PnP's planar ambiguity), and repeating it would only
    repeat the mistake. So a robot standing still is not calibrated until it moves; until then the
    state says how many distinct configurations there are.

    Bump detection: once fused, every new frame's keypoints are also reprojected under the fused
    pose. A frame *disagrees* when that error exceeds ``bump_threshold_px`` while the frame's own
    single-frame fit is good. ``bump_frames`` consecutive disagreeing frames, spanning at least
    ``min_frames`` distinct configurations, mean the camera moved:
    the window is replaced by those frames and fusion re-converges from there. An agreeing frame
    clears the streak, so isolated bad detections never reset a good calibration.

Moving camera
    :class:`MovingCameraFilter` gates per-frame estimates (reprojection error, and jumps that are
    not confirmed by the next frames) and smooths them exponentially on SE(3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import se3
from .camera import PinholeCamera
from .pnp import (FrameCorrespondences, PnPConfig, PnPError, PnPResult, camera_position_covariance,
                  reprojection_errors, solve_pnp_multiframe)

__all__ = ["FusionConfig", "FusionState", "StaticCameraFusion", "MovingFilterConfig", "MovingCameraFilter"]


@dataclass(frozen=True)
class FusionConfig:
    max_frames: int = 300  # frames kept in the window (oldest or most redundant dropped beyond this)
    min_frames: int = 3  # distinct joint configurations needed before a fused pose is reported
    min_joint_distance: float = 0.05  # rad (L2 over joints): a frame this close to a kept one is skipped
    converged_trans_std_m: float = 0.002  # converged when the 1-sigma camera-position uncertainty is below...
    converged_rot_std_deg: float = 0.1  # ...and the 1-sigma rotation uncertainty is below this...
    converged_min_frames: int = 20  # ...and at least this many diverse frames are fused
    bump_threshold_px: float = 10.0  # RMS reprojection error under the fused pose that counts as disagreement
    bump_frames: int = 10  # consecutive disagreeing frames that mean the camera moved
    frame_quality_px: float = 5.0  # a frame's own single-frame RMSE must be below this to vote for a bump
    pnp: PnPConfig = field(default_factory=PnPConfig)  # solver settings for the joint solve


@dataclass
class FusionState:
    """What the fusion knows after an update."""

    T_camera_base: np.ndarray | None  # (4, 4) fused pose, None until ``min_frames`` distinct configurations are in
    covariance: np.ndarray | None  # (6, 6) left-perturbation covariance (see core.pnp)
    num_frames: int  # diverse frames in the window
    converged: bool
    bumped: bool = False  # this update detected a camera bump and reset the window
    frame_error_px: float | None = None  # this frame's RMS error under the fused pose before the update
    segment: int = 0  # increments at every reset or bump
    agreed: bool = True  # this frame agreed with the fused pose (or there was none yet): evidence for it
    refined: bool = False  # T_camera_base is the outline-refined pose (see core.silhouette), not the keypoint one
    refine_detail: str = ""  # why the last outline refinement was refused, or ""
    #: an unconfirmed bump: this many consecutive well-fitting frames (>= bump_frames) disagree with the
    #: fused pose, but span fewer than min_frames distinct configurations (the robot stands still). The
    #: fused pose is contradicted by the newest evidence, so it is not published until either side wins.
    disputed: int = 0
    disputed_configurations: int = 0  # distinct joint configurations among the disputing frames

    @property
    def trans_std_m(self) -> float:
        """1-sigma uncertainty (RMS over axes combined) of the camera position in the base frame, metres."""
        if self.covariance is None:
            return float("inf")
        return float(np.sqrt(np.trace(camera_position_covariance(self.T_camera_base, self.covariance))))

    @property
    def rot_std_deg(self) -> float:
        """1-sigma rotation uncertainty (all axes combined), degrees."""
        return float(np.degrees(np.sqrt(np.trace(self.covariance[3:, 3:])))) if self.covariance is not None else float("inf")


@dataclass
class _Frame:
    corr: FrameCorrespondences
    q: np.ndarray  # joint vector used for diversity
    stamp_ns: int


class StaticCameraFusion:
    """Fuses frames from a static camera into one ``T_camera_base``. Not thread-safe: one caller."""

    def __init__(self, camera: PinholeCamera, config: FusionConfig = FusionConfig()):
        self.camera = camera
        self.config = config
        self._frames: list[_Frame] = []
        self._pending: list[_Frame] = []  # consecutive disagreeing frames (bump candidates)
        self._pending_count = 0  # length of that streak (near-duplicates beyond bump_frames are not kept)
        self._pending_distinct: list[_Frame] = []  # the streak's distinct configurations, kept as it grows
        self._T: np.ndarray | None = None
        self._cov: np.ndarray | None = None
        self._segment = 0

    # -- state ----------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return len(self._frames)

    def state(self, **extra) -> FusionState:
        ok = self._T is not None and len(self._frames) >= self.config.min_frames
        disputed = self._pending_count if ok and self._pending_count >= self.config.bump_frames else 0
        st = FusionState(T_camera_base=self._T if ok else None, covariance=self._cov if ok else None,
                         num_frames=len(self._frames), converged=False, segment=self._segment, disputed=disputed,
                         disputed_configurations=len(self._pending_distinct) if disputed else 0, **extra)
        st.converged = self.is_converged(st)
        return st

    def is_converged(self, state: FusionState) -> bool:
        """The convergence rule (frames, 1-sigma position and rotation) applied to ``state``'s pose."""
        return bool(state.T_camera_base is not None and state.num_frames >= self.config.converged_min_frames
                    and state.trans_std_m <= self.config.converged_trans_std_m
                    and state.rot_std_deg <= self.config.converged_rot_std_deg)

    def reset(self, *, T_camera_base=None, covariance=None) -> None:
        """Forget all frames (optionally start from a saved calibration, reported until new frames arrive)."""
        self._frames.clear()
        self._end_streak()
        self._T = None if T_camera_base is None else np.asarray(T_camera_base, dtype=np.float64)
        self._cov = None if covariance is None else np.asarray(covariance, dtype=np.float64)
        self._segment += 1

    def set_camera(self, camera: PinholeCamera) -> bool:
        """Change intrinsics. Returns True (and resets) if they differ from the current ones."""
        same = (camera.width, camera.height) == (self.camera.width, self.camera.height) and np.allclose(
            camera.K, self.camera.K) and camera.D.shape == self.camera.D.shape and np.allclose(camera.D, self.camera.D)
        self.camera = camera
        if not same:
            self.reset()
        return not same

    # -- update ---------------------------------------------------------------------------------
    def _frame_error(self, corr: FrameCorrespondences) -> float:
        ok = np.all(np.isfinite(corr.pixels), axis=1)
        if corr.weights is not None:
            ok &= np.asarray(corr.weights) > self.config.pnp.min_weight
        if ok.sum() < self.config.pnp.min_points:
            return float("nan")
        uv = self.camera.undistort_pixels(np.asarray(corr.pixels)[ok])
        err = reprojection_errors(self._T, np.asarray(corr.points_base)[ok], uv, self.camera.K)
        # median over points: one bad keypoint must not make the whole frame "disagree"
        return float(np.sqrt(np.median(err ** 2)))

    def _is_duplicate(self, frame: _Frame, frames: list[_Frame]) -> bool:
        """Whether ``frame``'s joint configuration is within ``min_joint_distance`` of one in ``frames``."""
        return any(f.q.shape == frame.q.shape and np.linalg.norm(f.q - frame.q) < self.config.min_joint_distance
                   for f in frames)

    def _end_streak(self) -> None:
        self._pending.clear()
        self._pending_distinct.clear()
        self._pending_count = 0

    def _insert(self, frame: _Frame) -> None:
        if self._is_duplicate(frame, self._frames):
            # A near-duplicate configuration is no new evidence, and it would crowd out diverse frames
            # (and, below min_frames, make one configuration's ambiguous fit look confirmed).
            return
        self._frames.append(frame)
        if len(self._frames) > self.config.max_frames:
            self._frames.pop(0)

    def _solve(self) -> None:
        if len(self._frames) < self.config.min_frames:
            return
        try:
            res = solve_pnp_multiframe([f.corr for f in self._frames], self.camera, config=self.config.pnp,
                                       T_init=self._T if len(self._frames) > self.config.min_frames else None)
        except PnPError:
            if self._T is None:
                return
            # Starting from the current pose failed (e.g. after a bad seed): solve from scratch.
            try:
                res = solve_pnp_multiframe([f.corr for f in self._frames], self.camera, config=self.config.pnp)
            except PnPError:
                return
        self._T, self._cov = res.pose.T_camera_base, res.pose.covariance
        # Frames the joint solve rejects as outliers leave the window.
        self._frames = [f for f, keep in zip(self._frames, res.frame_inliers) if keep]

    def update(self, corr: FrameCorrespondences, joint_vector, *, single: PnPResult | None = None,
               stamp_ns: int = 0) -> FusionState:
        """Add one frame.

        Args:
            corr: the frame's keypoints (pixels, confidences) and their base-frame positions.
            joint_vector: (J,) joint positions of the frame, for the diversity test.
            single: the frame's own single-frame PnP result, if it had one (used to judge bumps).
            stamp_ns: image stamp.
        """
        frame = _Frame(corr=corr, q=np.asarray(joint_vector, dtype=np.float64).reshape(-1), stamp_ns=stamp_ns)
        err = None
        if self._T is not None and len(self._frames) >= self.config.min_frames:
            err = self._frame_error(corr)
            good_fit = single is not None and single.rmse_px <= self.config.frame_quality_px
            if np.isfinite(err) and err > self.config.bump_threshold_px:
                if good_fit:
                    self._pending_count += 1
                    new_configuration = not self._is_duplicate(frame, self._pending_distinct)
                    if new_configuration:
                        self._pending_distinct.append(frame)
                    # Beyond bump_frames only new configurations are kept: a robot standing still for
                    # minutes must not grow the streak without bound.
                    if len(self._pending) < self.config.bump_frames or new_configuration:
                        self._pending.append(frame)
                    # As for the first pose: one configuration seen bump_frames times is one piece of
                    # evidence, so the streak must also span min_frames distinct configurations.
                    if (self._pending_count >= self.config.bump_frames
                            and len(self._pending_distinct) >= self.config.min_frames):
                        pending = list(self._pending)  # reset() empties the streak in place
                        self.reset()
                        for f in pending:
                            self._insert(f)
                        self._solve()
                        return self.state(bumped=True, frame_error_px=err)
                # A disagreeing frame (bump candidate or bad detection) never enters the window.
                return self.state(frame_error_px=err, agreed=False)
            self._end_streak()
        self._insert(frame)
        self._solve()
        return self.state(frame_error_px=err)


# --------------------------------------------------------------------------------------------
# Moving camera
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MovingFilterConfig:
    max_rmse_px: float = 8.0  # per-frame estimates worse than this are dropped
    max_jump_m: float = 0.10  # a jump larger than this from the filtered pose...
    max_jump_deg: float = 10.0  # ...or this, is accepted only when confirmed by...
    confirm_frames: int = 3  # ...this many consecutive consistent frames
    alpha: float = 0.5  # exponential smoothing weight of the newest estimate (1 = no smoothing)


class MovingCameraFilter:
    """Per-frame estimates with an outlier gate and SE(3) exponential smoothing."""

    def __init__(self, config: MovingFilterConfig = MovingFilterConfig()):
        self.config = config
        self._T: np.ndarray | None = None
        self._jumps: list[np.ndarray] = []

    @property
    def pose(self) -> np.ndarray | None:
        """Current filtered ``T_camera_base`` (4, 4), or None before the first accepted estimate."""
        return self._T

    def reset(self) -> None:
        self._T = None
        self._jumps.clear()

    def update(self, est: PnPResult) -> np.ndarray | None:
        """Filtered ``T_camera_base`` after this estimate, or None if nothing trustworthy yet."""
        c = self.config
        if est.rmse_px > c.max_rmse_px:
            return self._T
        T = est.T_camera_base
        if self._T is None:
            self._T = T.copy()
            return self._T
        # Compare camera poses (T_base_camera), the quantity that moves.
        A, B = se3.invert_transform(self._T), se3.invert_transform(T)
        if se3.translation_error(A, B) > c.max_jump_m or se3.rotation_error_deg(A, B) > c.max_jump_deg:
            if self._jumps and (se3.translation_error(se3.invert_transform(self._jumps[-1]), B) > c.max_jump_m
                                or se3.rotation_error_deg(se3.invert_transform(self._jumps[-1]), B) > c.max_jump_deg):
                self._jumps.clear()  # jump candidates disagree with each other: keep waiting
            self._jumps.append(T)
            if len(self._jumps) < c.confirm_frames:
                return self._T
            self._T = T.copy()
            self._jumps.clear()
            return self._T
        self._jumps.clear()
        delta = se3.matrix_to_rvec(self._T[:3, :3].T @ T[:3, :3])
        R = self._T[:3, :3] @ se3.rvec_to_matrix(c.alpha * delta)
        t = (1 - c.alpha) * self._T[:3, 3] + c.alpha * T[:3, 3]
        self._T = se3.make_transform(R, t)
        return self._T
