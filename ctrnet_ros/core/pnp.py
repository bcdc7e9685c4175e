"""Robust Perspective-n-Point: camera pose from 2D keypoints and their 3D robot-base positions.

Pipeline (single frame and multi-frame alike):

1. Drop unusable points (NaN/inf, confidence weight at or below ``min_weight``); undistort pixels.
2. Refuse degenerate input with a stated reason (fewer than ``min_points``; collinear 3D points).
3. OpenCV RANSAC with SQPnP as the minimal/non-minimal solver. SQPnP is globally optimal and, unlike
   EPnP, exact for coplanar points (e.g. the Panda at q3 = q5 = 0).
4. Weighted Levenberg-Marquardt refinement on the inliers (per-point confidence weights).
5. A 6x6 covariance from the Gauss-Newton normal equations, scaled by the residual variance.

Covariance convention: a *left* perturbation of ``T_camera_base``,
``T = Exp([rho, phi]) @ T_hat`` with ``rho`` (translation, metres) and ``phi`` (rotation vector,
radians) expressed in the camera frame; ordered ``(x, y, z, rx, ry, rz)`` like
geometry_msgs/PoseWithCovariance. :func:`covariance_of_inverse` moves it to ``T_base_camera``.

A static camera watching a moving robot sees one fixed ``T_camera_base``; keypoints of every frame
are in base coordinates, so many frames simply stack into one PnP problem
(:func:`solve_pnp_multiframe`), with whole-frame outlier rejection on top of point RANSAC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from . import se3
from .camera import PinholeCamera

__all__ = [
    "PnPConfig",
    "PnPResult",
    "PnPError",
    "MultiFramePnPResult",
    "FrameCorrespondences",
    "solve_pnp",
    "solve_pnp_multiframe",
    "refine_pose",
    "reprojection_errors",
    "covariance_of_inverse",
    "se3_exp",
    "adjoint",
    "camera_position_covariance",
]

_METHODS = {"sqpnp": cv2.SOLVEPNP_SQPNP, "iterative": cv2.SOLVEPNP_ITERATIVE}


class PnPError(RuntimeError):
    """PnP refused or failed; ``reason`` is a short machine-readable tag, the message says why."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class PnPConfig:
    method: str = "sqpnp"  # "sqpnp" or "iterative": OpenCV solver used inside RANSAC and for the initial fit
    ransac: bool = True  # reject outlier points with RANSAC before refinement
    ransac_threshold_px: float = 8.0  # inlier threshold on reprojection error, pixels
    ransac_confidence: float = 0.999  # RANSAC success probability
    ransac_iterations: int = 200  # RANSAC iteration cap
    refine: bool = True  # weighted Levenberg-Marquardt refinement on inliers
    refine_iterations: int = 20  # LM iteration cap
    min_points: int = 4  # refuse with fewer usable (finite, weighted, inlier) points
    min_weight: float = 0.0  # points whose weight is <= this are not used
    min_spread_m: float = 0.02  # refuse when the 3D points' second principal extent is below this (collinear)
    pixel_sigma_floor_px: float = 0.5  # lower bound on the residual std used to scale the covariance

    def __post_init__(self):
        if self.method not in _METHODS:
            raise ValueError(f"PnP method must be one of {sorted(_METHODS)}, got {self.method!r}")
        if self.min_points < 4:
            raise ValueError("min_points must be at least 4")


@dataclass(frozen=True)
class PnPResult:
    T_camera_base: np.ndarray  # (4, 4) base -> camera optical frame
    rmse_px: float  # weighted RMS reprojection error over inliers, pixels
    inliers: np.ndarray  # (N,) bool over the *input* points (False for dropped/unusable points)
    covariance: np.ndarray  # (6, 6), see module docstring
    num_points: int  # usable points given to the solver

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


@dataclass(frozen=True)
class FrameCorrespondences:
    """One frame's 2D-3D correspondences for multi-frame PnP."""

    points_base: np.ndarray  # (N, 3) metres
    pixels: np.ndarray  # (N, 2) pixels (distorted, as detected)
    weights: np.ndarray | None = None  # (N,) confidences, or None for all ones


@dataclass(frozen=True)
class MultiFramePnPResult:
    pose: PnPResult  # joint solution over all inlier frames; pose.inliers spans the concatenated points
    frame_inliers: np.ndarray  # (F,) bool: frame kept
    frame_rmse_px: np.ndarray  # (F,) per-frame RMS reprojection error under the final pose (NaN if unusable)


# --------------------------------------------------------------------------------------------
# Lie-group helpers (covariance bookkeeping)
# --------------------------------------------------------------------------------------------
def _skew(v) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def se3_exp(xi) -> np.ndarray:
    """(6,) twist (rho: translation, phi: rotation vector) -> (4, 4) transform (first-order translation coupling)."""
    xi = np.asarray(xi, dtype=np.float64).reshape(6)
    rho, phi = xi[:3], xi[3:]
    theta = np.linalg.norm(phi)
    R = se3.rvec_to_matrix(phi)
    if theta < 1e-9:
        V = np.eye(3) + 0.5 * _skew(phi)
    else:
        K = _skew(phi / theta)
        V = np.eye(3) + (1 - np.cos(theta)) / theta * K + (theta - np.sin(theta)) / theta * (K @ K)
    return se3.make_transform(R, V @ rho)


def adjoint(T) -> np.ndarray:
    """(6, 6) adjoint of a transform, for twists ordered (rho, phi): ``T Exp(xi) T^-1 = Exp(Ad_T xi)``."""
    R, t = np.asarray(T)[:3, :3], np.asarray(T)[:3, 3]
    A = np.zeros((6, 6))
    A[:3, :3] = R
    A[:3, 3:] = _skew(t) @ R
    A[3:, 3:] = R
    return A


def covariance_of_inverse(T_a_b, cov_a_b) -> np.ndarray:
    """Left-perturbation covariance of ``T_a_b`` -> that of ``T_b_a = inv(T_a_b)``.

    If ``T_a_b = Exp(d) T_hat`` then ``T_b_a = T_hat^-1 Exp(-d) = Exp(-Ad_{T_hat^-1} d) T_hat^-1``.
    """
    A = adjoint(se3.invert_transform(T_a_b))
    return A @ np.asarray(cov_a_b) @ A.T


def camera_position_covariance(T_camera_base, cov_camera_base) -> np.ndarray:
    """(3, 3) covariance of the camera's position in the base frame (translation of ``T_base_camera``).

    With ``T_base_camera' = Exp([rho, phi]) T_base_camera`` the position moves by ``rho - [t]x phi``,
    so rotation uncertainty counts with the lever arm ``t`` (metres): that is the number an
    integrator means by "translation accuracy of the calibration".
    """
    T_bc = se3.invert_transform(T_camera_base)
    cov_bc = covariance_of_inverse(T_camera_base, cov_camera_base)
    A = np.hstack([np.eye(3), -_skew(T_bc[:3, 3])])
    return A @ cov_bc @ A.T


# --------------------------------------------------------------------------------------------
# Core solver
# --------------------------------------------------------------------------------------------
def reprojection_errors(T_camera_base, points_base, pixels, K) -> np.ndarray:
    """(N,) pixel distances between ``pixels`` (undistorted) and projected ``points_base`` under an ideal K."""
    P = se3.transform_points(T_camera_base, points_base)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (P[:, :2] / P[:, 2:3]) @ np.asarray(K)[:2, :2].T + np.asarray(K)[:2, 2]
        err = np.linalg.norm(uv - pixels, axis=1)
    err[P[:, 2] <= 0] = np.inf
    return err


def _residuals_and_jacobian(T, X, uv, K, sw):
    """Weighted residuals (2N,) and their Jacobian (2N, 6) w.r.t. a left perturbation of T."""
    P = X @ T[:3, :3].T + T[:3, 3]
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    fx, fy = K[0, 0], K[1, 1]
    zi = 1.0 / z
    xz, yz = x * zi, y * zi
    n = len(X)
    r = np.empty(2 * n)
    r[:n] = (fx * xz + K[0, 2] - uv[:, 0]) * sw
    r[n:] = (fy * yz + K[1, 2] - uv[:, 1]) * sw
    # d(u, v)/dP = [[a, 0, c], [0, b, e]], and dP/d(rho, phi) = [I, -skew(P)] for P' = Exp(xi) P, so the
    # rotation columns are P x d(u)/dP and P x d(v)/dP.
    a, c = fx * zi * sw, -fx * xz * zi * sw
    b, e = fy * zi * sw, -fy * yz * zi * sw
    J = np.zeros((2 * n, 6))
    Ju, Jv = J[:n], J[n:]
    Ju[:, 0], Ju[:, 2] = a, c
    Ju[:, 3], Ju[:, 4], Ju[:, 5] = y * c, z * a - x * c, -y * a
    Jv[:, 1], Jv[:, 2] = b, e
    Jv[:, 3], Jv[:, 4], Jv[:, 5] = y * e - z * b, -x * e, x * b
    return r, J


def refine_pose(T_camera_base, points_base, pixels, K, weights=None, *, iterations: int = 20):
    """Weighted Levenberg-Marquardt refinement of ``T_camera_base`` on undistorted ``pixels``.

    Args:
        T_camera_base: (4, 4) initial pose.
        points_base: (N, 3) metres. pixels: (N, 2) undistorted pixels. K: (3, 3).
        weights: (N,) non-negative weights (confidences); None means ones.
    Returns:
        (T (4, 4), normal matrix J^T W J (6, 6), weighted squared residual sum).
    """
    X = np.asarray(points_base, dtype=np.float64)
    uv = np.asarray(pixels, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    w = np.ones(len(X)) if weights is None else np.asarray(weights, dtype=np.float64)
    sw = np.sqrt(w)
    T = np.asarray(T_camera_base, dtype=np.float64).copy()
    r, J = _residuals_and_jacobian(T, X, uv, K, sw)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(iterations):
        H = J.T @ J
        g = J.T @ r
        try:
            step = -np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), g)
        except np.linalg.LinAlgError:
            break
        T_new = se3_exp(step) @ T
        r_new, J_new = _residuals_and_jacobian(T_new, X, uv, K, sw)
        cost_new = float(r_new @ r_new)
        if np.isfinite(cost_new) and cost_new <= cost:
            converged = cost - cost_new < 1e-12 * max(cost, 1e-12) or np.linalg.norm(step) < 1e-10
            T, r, J, cost = T_new, r_new, J_new, cost_new
            lam = max(lam / 10.0, 1e-9)
            if converged:
                break
        else:
            lam *= 10.0
            if lam > 1e8:
                break
    return T, J.T @ J, cost


def _usable(points_base, pixels, weights, cfg: PnPConfig):
    X = np.asarray(points_base, dtype=np.float64).reshape(-1, 3)
    uv = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    if len(X) != len(uv):
        raise ValueError(f"points_base ({len(X)}) and pixels ({len(uv)}) differ in length")
    w = np.ones(len(X)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != len(X):
        raise ValueError(f"weights ({len(w)}) and points ({len(X)}) differ in length")
    ok = np.all(np.isfinite(X), axis=1) & np.all(np.isfinite(uv), axis=1) & np.isfinite(w) & (w > cfg.min_weight)
    return X, uv, w, ok


def _check_geometry(X: np.ndarray, cfg: PnPConfig, uv: np.ndarray | None = None) -> None:
    if len(X) < cfg.min_points:
        raise PnPError("too_few_points", f"only {len(X)} usable points; PnP needs at least {cfg.min_points}")
    if uv is not None:
        su = np.linalg.svd(uv - uv.mean(axis=0), compute_uv=False) / np.sqrt(len(uv))
        if su[1] < 0.5:
            raise PnPError("degenerate_geometry", f"detected keypoints are (nearly) collinear or coincident in the "
                           f"image (spread {su[1]:.2f} px across their main direction)")
    s = np.linalg.svd(X - X.mean(axis=0), compute_uv=False) / np.sqrt(len(X))
    if s[1] < cfg.min_spread_m:
        raise PnPError("degenerate_geometry",
                       f"3D points are (nearly) collinear: second principal extent {s[1] * 1000:.1f} mm "
                       f"< {cfg.min_spread_m * 1000:.0f} mm; the pose about that line is unobservable")


def _solve(X, uv_undist, w, K, cfg: PnPConfig, T_init=None):
    """Returns (T, inlier mask over X, normal matrix, cost). X, uv already filtered to usable points."""
    flags = _METHODS[cfg.method]
    if T_init is not None:
        T0 = np.asarray(T_init, dtype=np.float64)
        err = reprojection_errors(T0, X, uv_undist, K)
        inl = err < cfg.ransac_threshold_px if cfg.ransac else np.isfinite(err)
    elif cfg.ransac and len(X) > cfg.min_points:
        try:
            ok, rvec, tvec, idx = cv2.solvePnPRansac(
                X.reshape(-1, 1, 3), uv_undist.reshape(-1, 1, 2), K, None, flags=flags,
                reprojectionError=cfg.ransac_threshold_px, confidence=cfg.ransac_confidence,
                iterationsCount=cfg.ransac_iterations)
        except cv2.error as exc:  # OpenCV asserts on degenerate samples (e.g. coincident image points)
            raise PnPError("solver_failed", f"OpenCV PnP failed on these keypoints: {exc.err or exc}") from exc
        if not ok or idx is None:
            raise PnPError("ransac_failed", "RANSAC found no pose consistent with enough keypoints")
        T0 = se3.transform_from_rvec_tvec(rvec.ravel(), tvec.ravel())
        # Re-derive inliers from the pose so the mask matches our own error definition.
        inl = reprojection_errors(T0, X, uv_undist, K) < cfg.ransac_threshold_px
    else:
        try:
            ok, rvec, tvec = cv2.solvePnP(X.reshape(-1, 1, 3), uv_undist.reshape(-1, 1, 2), K, None, flags=flags)
        except cv2.error as exc:
            raise PnPError("solver_failed", f"OpenCV PnP failed on these keypoints: {exc.err or exc}") from exc
        if not ok:
            raise PnPError("solver_failed", "OpenCV PnP returned no solution")
        T0 = se3.transform_from_rvec_tvec(rvec.ravel(), tvec.ravel())
        inl = np.ones(len(X), dtype=bool)
    if inl.sum() < cfg.min_points:
        raise PnPError("too_few_inliers", f"only {int(inl.sum())} keypoints agree with the best pose "
                       f"(threshold {cfg.ransac_threshold_px:g} px); need {cfg.min_points}")
    if cfg.refine:
        T, H, cost = refine_pose(T0, X[inl], uv_undist[inl], K, w[inl], iterations=cfg.refine_iterations)
        if cfg.ransac:  # the refined pose may admit more (or fewer) inliers; refine once more on those
            inl2 = reprojection_errors(T, X, uv_undist, K) < cfg.ransac_threshold_px
            if inl2.sum() >= cfg.min_points and not np.array_equal(inl2, inl):
                inl = inl2
                T, H, cost = refine_pose(T, X[inl], uv_undist[inl], K, w[inl], iterations=cfg.refine_iterations)
    else:
        T = T0
        r, J = _residuals_and_jacobian(T, X[inl], uv_undist[inl], K, np.sqrt(w[inl]))
        H, cost = J.T @ J, float(r @ r)
    P = se3.transform_points(T, X[inl])
    if np.any(P[:, 2] <= 0):
        raise PnPError("behind_camera", "the best pose puts keypoints behind the camera")
    return T, inl, H, cost


def _finish(T, inl_usable, ok_mask, H, cost, w_inl, cfg: PnPConfig) -> PnPResult:
    n = int(inl_usable.sum())
    wsum = float(w_inl.sum())
    rmse = float(np.sqrt(cost / max(wsum, 1e-12)))
    dof = max(2 * n - 6, 1)
    sigma2 = max(cost / dof * (n / max(wsum, 1e-12)), cfg.pixel_sigma_floor_px ** 2 / max(float(w_inl.mean()), 1e-12))
    try:
        cov = np.linalg.inv(H) * sigma2
    except np.linalg.LinAlgError:
        cov = np.full((6, 6), np.inf)
    inliers = np.zeros(len(ok_mask), dtype=bool)
    inliers[np.flatnonzero(ok_mask)[inl_usable]] = True
    return PnPResult(T_camera_base=T, rmse_px=rmse, inliers=inliers, covariance=0.5 * (cov + cov.T),
                     num_points=int(ok_mask.sum()))


def solve_pnp(points_base, pixels, camera: PinholeCamera, *, weights=None, config: PnPConfig = PnPConfig(),
              T_init=None) -> PnPResult:
    """Camera pose from one frame's keypoints.

    Args:
        points_base: (N, 3) keypoints in the robot base frame, metres.
        pixels: (N, 2) detected keypoints, pixels in ``camera``'s (distorted) image; NaN = not detected.
        camera: intrinsics and distortion of that image.
        weights: (N,) per-point confidences in [0, 1]; points at or below ``config.min_weight`` are dropped.
        T_init: optional (4, 4) prior ``T_camera_base``; skips RANSAC, inliers are judged against it.
    Returns:
        :class:`PnPResult` with ``T_camera_base``.
    Raises:
        PnPError: too few points, degenerate geometry, or no consistent pose (see ``.reason``).
    """
    X, uv, w, ok = _usable(points_base, pixels, weights, config)
    Xu = X[ok]
    _check_geometry(Xu, config)
    uvu = camera.undistort_pixels(uv[ok])
    _check_geometry(Xu, config, uvu)
    T, inl, H, cost = _solve(Xu, uvu, w[ok], camera.K, config, T_init=T_init)
    return _finish(T, inl, ok, H, cost, w[ok][inl], config)


def solve_pnp_multiframe(frames: Sequence[FrameCorrespondences], camera: PinholeCamera, *,
                         config: PnPConfig = PnPConfig(), frame_outlier_px: float = 4.0,
                         frame_outlier_mad: float = 4.0, T_init=None, max_rounds: int = 3) -> MultiFramePnPResult:
    """One ``T_camera_base`` from many frames of a static camera watching a moving robot.

    Point-level RANSAC runs over the stacked correspondences; then frames whose RMS reprojection
    error exceeds ``max(frame_outlier_px, median + frame_outlier_mad * 1.4826 * MAD)`` are dropped and
    the pose is re-solved, up to ``max_rounds`` times.

    Args:
        frames: per-frame correspondences (base-frame points differ per frame: the robot moved).
        camera: the (fixed) camera.
        T_init: optional prior pose (e.g. the current fused estimate) to start from instead of RANSAC.
    Raises:
        PnPError: as :func:`solve_pnp`, over the kept frames.
    """
    if len(frames) == 0:
        raise PnPError("no_frames", "multi-frame PnP needs at least one frame")
    # Stack once, then validate all points in one vectorised pass (this runs on every fusion update).
    Xs = [np.asarray(f.points_base, dtype=np.float64).reshape(-1, 3) for f in frames]
    uvs = [np.asarray(f.pixels, dtype=np.float64).reshape(-1, 2) for f in frames]
    ws = [np.ones(len(x)) if f.weights is None else np.asarray(f.weights, dtype=np.float64).reshape(-1)
          for f, x in zip(frames, Xs)]
    for i, (x, u, wi) in enumerate(zip(Xs, uvs, ws)):
        if not len(x) == len(u) == len(wi):
            raise ValueError(f"frame {i}: points_base ({len(x)}), pixels ({len(u)}) and weights ({len(wi)}) "
                             f"differ in length")
    fid = np.repeat(np.arange(len(frames)), [len(x) for x in Xs])
    X, uv, w, ok = _usable(np.concatenate(Xs), np.concatenate(uvs), np.concatenate(ws), config)
    uv_und = np.full_like(uv, np.nan)
    uv_und[ok] = camera.undistort_pixels(uv[ok]) if ok.any() else uv[ok]
    keep_frames = np.ones(len(frames), dtype=bool)
    T = T_init
    frame_rmse = np.full(len(frames), np.inf)
    solved_for = None  # the frame selection of the last solve
    for _ in range(max_rounds):
        sel = ok & keep_frames[fid]
        _check_geometry(X[sel], config)
        T, inl, H, cost = _solve(X[sel], uv_und[sel], w[sel], camera.K, config, T_init=T)
        solved_for = keep_frames.copy()
        err = np.full(len(X), np.inf)
        err[ok] = reprojection_errors(T, X[ok], uv_und[ok], camera.K)
        good = ok & np.isfinite(err) & ((err < config.ransac_threshold_px) if config.ransac else True)
        n_ok = np.bincount(fid[ok], minlength=len(frames))
        n_good = np.bincount(fid[good], minlength=len(frames))
        sse = np.bincount(fid[good], weights=err[good] ** 2, minlength=len(frames))
        # A frame with most of its points outside the threshold counts as a failed frame.
        enough = n_good >= np.maximum(config.min_points, n_ok // 2 + 1)
        frame_rmse = np.where(enough, np.sqrt(sse / np.maximum(n_good, 1)), np.inf)
        finite = frame_rmse[keep_frames & np.isfinite(frame_rmse)]
        if len(finite) == 0:
            raise PnPError("no_consistent_frames", "no frame agrees with the joint pose")
        med = np.median(finite)
        mad = np.median(np.abs(finite - med)) * 1.4826
        limit = max(frame_outlier_px, med + frame_outlier_mad * mad)
        new_keep = keep_frames & (frame_rmse <= limit)
        if new_keep.sum() == 0:
            raise PnPError("no_consistent_frames", "every frame was rejected as an outlier")
        if np.array_equal(new_keep, keep_frames):
            break
        keep_frames = new_keep
    # Final pose over the kept frames (already solved if the loop ended by convergence).
    sel = ok & keep_frames[fid]
    if not np.array_equal(solved_for, keep_frames):
        T, inl, H, cost = _solve(X[sel], uv_und[sel], w[sel], camera.K, config, T_init=T)
    ok_final = sel.copy()
    pose = _finish(T, inl, ok_final, H, cost, w[sel][inl], config)
    return MultiFramePnPResult(pose=pose, frame_inliers=keep_frames, frame_rmse_px=frame_rmse)
