"""Differentiable PnP: a camera pose whose gradient flows back to the 2D keypoints (BPnP-style).

The forward solve is the core's robust PnP (:func:`ctrnet_ros.core.pnp.solve_pnp`: SQPnP inside
RANSAC, then weighted Levenberg-Marquardt), run without gradients. The backward pass uses the
implicit function theorem at that optimum: if ``T*`` minimises the weighted reprojection cost
``sum_i w_i |pi(T X_i) - u_i|^2``, then one Gauss-Newton step taken *from* ``T*`` (detached) with the
residual kept in the graph,

    delta = -(J^T W J)^-1 J^T W r(T*, u),     T = Exp(delta) T*,

is zero in value (``r`` is orthogonal to ``J`` at the optimum) and has exactly the Gauss-Newton
implicit derivative ``dT/du = (J^T W J)^-1 J^T W`` (BPnP, Chen et al. 2020, with the Gauss-Newton
Hessian). So the returned pose equals the robust solution and gradients reach ``u`` (and the
weights ``w``) without unrolling an iterative solver.

Conventions are the core's: ``T_camera_base`` maps base coordinates to the camera frame; a left
perturbation ``T = Exp([rho, phi]) T_hat`` with ``rho`` in metres and ``phi`` a rotation vector in
radians, both in the camera frame; ideal pinhole ``K`` (undistorted pixels, OpenCV pixel centres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.camera import PinholeCamera
from ..core.pnp import PnPConfig, PnPError, solve_pnp

__all__ = ["project_points", "se3_exp_torch", "gauss_newton_step", "differentiable_pnp", "PnPBatchResult",
           "solve_pnp_batch"]


def _check(name: str, t: torch.Tensor, shape: tuple) -> None:
    if t.dim() != len(shape) or any(s is not None and t.shape[i] != s for i, s in enumerate(shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")


def project_points(T_camera_base: torch.Tensor, points_base: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection: ``(B, 4, 4)``, ``(B, N, 3)`` metres, ``(B, 3, 3)`` -> ``(B, N, 2)`` pixels."""
    P = points_base @ T_camera_base[:, :3, :3].transpose(1, 2) + T_camera_base[:, None, :3, 3]
    z = P[..., 2:3].clamp_min(1e-6)
    xy = P[..., :2] / z
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1)[:, None]  # (B, 1, 2)
    c = K[:, None, :2, 2]  # (B, 1, 2)
    return xy * f + c


def _skew(v: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` -> ``(..., 3, 3)`` cross-product matrices."""
    z = torch.zeros_like(v[..., 0])
    return torch.stack([torch.stack([z, -v[..., 2], v[..., 1]], -1),
                        torch.stack([v[..., 2], z, -v[..., 0]], -1),
                        torch.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def se3_exp_torch(xi: torch.Tensor) -> torch.Tensor:
    """``(B, 6)`` twists ``(rho, phi)`` -> ``(B, 4, 4)`` transforms; smooth at ``phi = 0``.

    Matches :func:`ctrnet_ros.core.pnp.se3_exp` (rotation by Rodrigues, translation ``V rho``).
    """
    _check("xi", xi, (None, 6))
    rho, phi = xi[:, :3], xi[:, 3:]
    theta2 = (phi * phi).sum(-1, keepdim=True)[..., None]  # (B, 1, 1)
    theta = torch.sqrt(theta2 + 1e-24)
    small = theta2 < 1e-10
    # Taylor series below 1e-5 rad keeps both values and gradients finite at zero.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-24))
    c = torch.where(small, 1.0 / 6 - theta2 / 120, (theta - torch.sin(theta)) / (theta2 * theta).clamp_min(1e-30))
    W = _skew(phi)
    W2 = W @ W
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device).expand_as(W)
    R = eye + a * W + b * W2
    V = eye + b * W + c * W2
    T = torch.zeros(xi.shape[0], 4, 4, dtype=xi.dtype, device=xi.device)
    T[:, :3, :3] = R
    T[:, :3, 3] = (V @ rho[..., None])[..., 0]
    T[:, 3, 3] = 1.0
    return T


def _residual_jacobian(T: torch.Tensor, X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``d pi(Exp(xi) T X) / d xi`` at ``xi = 0``: ``(B, N, 2, 6)``."""
    P = X @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]  # (B, N, 3)
    x, y, z = P[..., 0], P[..., 1], P[..., 2].clamp_min(1e-6)
    fx, fy = K[:, 0, 0, None], K[:, 1, 1, None]
    zero = torch.zeros_like(z)
    du = torch.stack([fx / z, zero, -fx * x / z ** 2], -1)  # (B, N, 3)
    dv = torch.stack([zero, fy / z, -fy * y / z ** 2], -1)
    dP = torch.cat([torch.eye(3, dtype=T.dtype, device=T.device).expand(*P.shape[:2], 3, 3), -_skew(P)], -1)
    return torch.stack([du, dv], -2) @ dP  # (B, N, 2, 6)


def gauss_newton_step(T_star: torch.Tensor, points_base: torch.Tensor, pixels: torch.Tensor, K: torch.Tensor,
                      weights: torch.Tensor | None = None, *, damping: float = 1e-9) -> torch.Tensor:
    """One weighted Gauss-Newton step from ``T_star``: ``(B, 4, 4)``; see the module docstring.

    Args:
        T_star: (B, 4, 4) the (detached) optimum of the weighted reprojection cost.
        points_base: (B, N, 3) metres. pixels: (B, N, 2) undistorted pixels (may require grad).
        K: (B, 3, 3). weights: (B, N) non-negative (may require grad); None means ones.
        damping: relative Levenberg damping of the normal matrix (keeps it invertible).
    """
    B, N = pixels.shape[:2]
    _check("T_star", T_star, (B, 4, 4))
    _check("points_base", points_base, (B, N, 3))
    _check("pixels", pixels, (B, N, 2))
    _check("K", K, (B, 3, 3))
    w = torch.ones(B, N, dtype=pixels.dtype, device=pixels.device) if weights is None else weights
    _check("weights", w, (B, N))
    T0 = T_star.detach()
    J = _residual_jacobian(T0, points_base.detach(), K).reshape(B, N * 2, 6)
    r = (project_points(T0, points_base, K) - pixels).reshape(B, N * 2)
    w2 = w.repeat_interleave(2, dim=1)  # (B, 2N)
    JW = J.transpose(1, 2) * w2[:, None, :]  # (B, 6, 2N)
    H = JW @ J
    H = H + damping * torch.diag_embed(torch.diagonal(H, dim1=1, dim2=2) + 1e-12)
    delta = -torch.linalg.solve(H, (JW @ r[..., None]))[..., 0]  # (B, 6)
    return se3_exp_torch(delta) @ T0


@dataclass
class PnPBatchResult:
    """Robust per-sample PnP on a batch (numpy side, no gradients)."""

    T_camera_base: np.ndarray  # (B, 4, 4) NaN where ``ok`` is False
    ok: np.ndarray  # (B,) bool: a pose was found
    inliers: np.ndarray  # (B, N) bool
    rmse_px: np.ndarray  # (B,) inlier reprojection RMSE, inf when not ok
    reasons: list[str]  # (B,) "" or the PnPError reason


def solve_pnp_batch(points_base: np.ndarray, pixels: np.ndarray, cameras: list[PinholeCamera], *,
                    weights: np.ndarray | None = None, config: PnPConfig = PnPConfig()) -> PnPBatchResult:
    """The core's robust PnP per sample: ``(B, N, 3)``, ``(B, N, 2)`` pixels, B cameras."""
    B, N = pixels.shape[:2]
    T = np.full((B, 4, 4), np.nan)
    ok = np.zeros(B, bool)
    inl = np.zeros((B, N), bool)
    rmse = np.full(B, np.inf)
    reasons = [""] * B
    for b in range(B):
        try:
            res = solve_pnp(points_base[b], pixels[b], cameras[b],
                            weights=None if weights is None else weights[b], config=config)
        except PnPError as exc:
            reasons[b] = exc.reason
            continue
        T[b], ok[b], inl[b], rmse[b] = res.T_camera_base, True, res.inliers, res.rmse_px
    return PnPBatchResult(T, ok, inl, rmse, reasons)


def differentiable_pnp(points_base: torch.Tensor, pixels: torch.Tensor, cameras: list[PinholeCamera], *,
                       weights: torch.Tensor | None = None, config: PnPConfig = PnPConfig()
                       ) -> tuple[torch.Tensor, PnPBatchResult]:
    """Robust PnP whose pose is differentiable w.r.t. ``pixels`` and ``weights``.

    Args:
        points_base: (B, N, 3) metres (no gradient needed).
        pixels: (B, N, 2) undistorted pixels in each camera's image (cameras without distortion).
        cameras: B pinhole cameras (their ``K`` is used).
        weights: (B, N) confidences; outliers of the robust solve get weight zero in the backward step.
    Returns:
        ``T_camera_base`` (B, 4, 4) in the dtype of ``pixels`` (identity rows where no pose was
        found: check ``result.ok``), and the :class:`PnPBatchResult` of the forward solve.
    """
    B, N = pixels.shape[:2]
    _check("points_base", points_base, (B, N, 3))
    if len(cameras) != B:
        raise ValueError(f"{len(cameras)} cameras for a batch of {B}")
    res = solve_pnp_batch(points_base.detach().double().cpu().numpy(), pixels.detach().double().cpu().numpy(),
                          cameras, weights=None if weights is None else weights.detach().double().cpu().numpy(),
                          config=config)
    dtype, device = pixels.dtype, pixels.device
    T_star = torch.from_numpy(np.where(res.ok[:, None, None], res.T_camera_base, np.eye(4))).to(device, dtype)
    K = torch.from_numpy(np.stack([c.K for c in cameras])).to(device, dtype)
    w = torch.ones(B, N, dtype=dtype, device=device) if weights is None else weights.to(dtype)
    w = w * torch.from_numpy(res.inliers).to(device, dtype)
    w = torch.where(torch.from_numpy(res.ok).to(device)[:, None], w, torch.ones_like(w))  # keep H invertible
    T = gauss_newton_step(T_star, points_base.to(dtype), pixels, K, w)
    return T, res
