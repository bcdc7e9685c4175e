"""Pose-accuracy metrics shared by training validation and evaluation: ADD and its AUC.

ADD (average distance, Hinterstoisser et al.; as used by DREAM and CtRNet for camera-to-robot
pose): the mean distance between the robot keypoints placed by the estimated and by the true
``T_camera_base``. Because a rigid transform preserves distances this is the same whether the
points are compared in the camera or in the base frame.

AUC: the area under the accuracy-vs-threshold curve for thresholds 0 .. ``max_threshold_m``,
as a percentage (100 = every frame exact). A frame without an estimate counts as ADD = inf.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["add_distances", "add_auc", "add_accuracy_curve"]


def add_distances(T_est, T_gt, points) -> np.ndarray:
    """ADD per frame, metres.

    Args:
        T_est: ``(4, 4)`` or ``(N, 4, 4)`` estimated ``T_camera_base``; a frame whose estimate is
            missing may be given as None (in a sequence) or as a matrix containing NaN.
        T_gt: ``(4, 4)`` or ``(N, 4, 4)`` ground-truth ``T_camera_base``.
        points: ``(K, 3)`` or ``(N, K, 3)`` keypoints in the base frame, metres.

    Returns:
        ``(N,)`` mean over the K points of ``|T_est p - T_gt p|`` (a scalar array for a single frame
        given as ``(4, 4)``); ``inf`` where the estimate is missing or not finite.
    """
    single = np.ndim(T_gt) == 2
    T_gt = np.asarray(T_gt, dtype=np.float64).reshape(-1, 4, 4)
    n = len(T_gt)
    if isinstance(T_est, (list, tuple)):
        T_est = np.stack([np.full((4, 4), np.nan) if t is None else np.asarray(t, dtype=np.float64) for t in T_est])
    T_est = np.asarray(T_est, dtype=np.float64).reshape(-1, 4, 4)
    if len(T_est) != n:
        raise ValueError(f"{len(T_est)} estimates for {n} ground-truth poses")
    p = np.asarray(points, dtype=np.float64)
    p = np.broadcast_to(p, (n,) + p.shape[-2:]) if p.ndim == 2 else p
    if p.shape[0] != n or p.shape[-1] != 3:
        raise ValueError(f"points must be (K, 3) or (N, K, 3) with N = {n}, got {np.shape(points)}")
    est = np.einsum("nij,nkj->nki", T_est[:, :3, :3], p) + T_est[:, None, :3, 3]  # (N, K, 3)
    gt = np.einsum("nij,nkj->nki", T_gt[:, :3, :3], p) + T_gt[:, None, :3, 3]
    with np.errstate(invalid="ignore"):
        d = np.linalg.norm(est - gt, axis=-1).mean(axis=-1)  # (N,)
    d = np.where(np.isfinite(d), d, np.inf)
    return d[0] if single else d


def add_auc(add_values_m: Sequence[float], max_threshold_m: float = 0.1) -> float:
    """Area under the ADD accuracy curve for thresholds in [0, ``max_threshold_m``], percent.

    ``100 * mean_i max(0, 1 - ADD_i / max_threshold)``: the exact integral of the fraction of
    frames with ``ADD <= t`` over ``t``, divided by ``max_threshold_m``. ``inf``/NaN (failed
    frames) contribute 0. Perfect estimates give 100, all failures 0; an empty input gives NaN.
    """
    if max_threshold_m <= 0:
        raise ValueError(f"max_threshold_m must be > 0, got {max_threshold_m}")
    a = np.asarray(add_values_m, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return float("nan")
    a = np.where(np.isfinite(a), a, np.inf)
    return float(100.0 * np.mean(np.clip(1.0 - a / max_threshold_m, 0.0, 1.0)))


def add_accuracy_curve(add_values_m: Sequence[float], max_threshold_m: float = 0.1,
                       num: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds (num,), fraction of frames with ADD <= threshold (num,))`` for plotting."""
    a = np.asarray(add_values_m, dtype=np.float64).reshape(-1)
    t = np.linspace(0.0, max_threshold_m, num)
    if a.size == 0:
        return t, np.full(num, np.nan)
    with np.errstate(invalid="ignore"):
        return t, (a[None, :] <= t[:, None]).mean(axis=1)
