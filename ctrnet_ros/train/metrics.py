"""Validation metrics of a keypoint model, at the camera's full resolution.

Keypoints are compared in *camera* pixels: predictions in network-input pixels are mapped back
through the inverse of the input transform (the letterbox), exactly as
:class:`~ctrnet_ros.core.estimator.CameraToRobotEstimator` does. Reported:

* ``pck2``, ``pck5``, ``pck10``: percent of ground-truth in-image keypoints predicted within 2/5/10 px
  (whatever their confidence: a missed keypoint counts as an error);
* ``median_px``, ``mean_px``: keypoint error statistics, camera pixels;
* ``mask_iou``: mean per-frame IoU of the robot mask (probability >= 0.5 vs coverage >= 0.5) at the
  heatmap stride of the network input;
* ``add_auc``: single-frame ADD AUC over 0-100 mm (:mod:`ctrnet_ros.eval.metrics`), PnP through
  :func:`ctrnet_ros.core.pnp.solve_pnp` with the estimator's gating; failed frames count as inf;
* ``add_median_mm``, ``pose_success``: median ADD (mm) and the percentage of frames with a pose.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core.camera import PinholeCamera
from ..core.estimator import EstimatorConfig
from ..core.pnp import PnPError, solve_pnp
from ..eval.metrics import add_auc, add_distances

__all__ = ["keypoint_errors", "pck", "mask_iou", "pose_from_keypoints", "KeypointMetrics", "PCK_THRESHOLDS_PX",
           "METRIC_NAMES"]

PCK_THRESHOLDS_PX = (2.0, 5.0, 10.0)
METRIC_NAMES = ("pck2", "pck5", "pck10", "median_px", "mean_px", "mask_iou", "add_auc", "add_median_mm",
                "pose_success")


def keypoint_errors(pred_uv, gt_uv, gt_valid) -> np.ndarray:
    """``(..., K, 2)`` x2 pixels, ``(..., K)`` bool -> ``(..., K)`` Euclidean error, NaN where not valid.

    A non-finite prediction for a valid keypoint is an infinite error (a miss), not a skipped one.
    """
    pred = np.asarray(pred_uv, dtype=np.float64)
    gt = np.asarray(gt_uv, dtype=np.float64)
    valid = np.asarray(gt_valid, dtype=bool) & np.all(np.isfinite(gt), axis=-1)
    with np.errstate(invalid="ignore"):
        err = np.linalg.norm(pred - gt, axis=-1)
    err = np.where(np.isfinite(err), err, np.inf)
    return np.where(valid, err, np.nan)


def pck(errors, threshold_px: float) -> float:
    """Percent of the non-NaN ``errors`` (pixels) that are <= ``threshold_px``; NaN if there are none."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    e = e[~np.isnan(e)]
    if e.size == 0:
        return float("nan")
    return float(100.0 * np.mean(e <= threshold_px))


def mask_iou(pred_prob, gt_coverage, threshold: float = 0.5) -> float:
    """IoU of ``pred_prob >= threshold`` and ``gt_coverage >= threshold`` (same shape); NaN if both empty."""
    p = np.asarray(pred_prob) >= threshold
    g = np.asarray(gt_coverage) >= threshold
    union = np.logical_or(p, g).sum()
    if union == 0:
        return float("nan")
    return float(np.logical_and(p, g).sum() / union)


def pose_from_keypoints(uv_camera, confidence, keypoints_base, camera: PinholeCamera,
                        config: EstimatorConfig = EstimatorConfig()) -> np.ndarray | None:
    """Single-frame ``T_camera_base`` (4, 4) from detected keypoints, or None when the frame fails.

    The same gating as :meth:`CameraToRobotEstimator.estimate` after detection: keypoints below
    ``config.min_confidence``, non-finite or outside the image are dropped; fewer than
    ``config.pnp.min_points`` usable, a PnP error, or an RMS reprojection error above
    ``config.max_rmse_px`` is a failure.

    Args:
        uv_camera: ``(K, 2)`` detected keypoints, camera pixels.
        confidence: ``(K,)`` in [0, 1].
        keypoints_base: ``(K, 3)`` the same keypoints in the robot base frame, metres.
        camera: the camera the pixels belong to.
    """
    uv = np.asarray(uv_camera, dtype=np.float64)
    conf = np.asarray(confidence, dtype=np.float64)
    usable = (conf >= config.min_confidence) & np.all(np.isfinite(uv), axis=1) & camera.in_image(uv)
    if usable.sum() < config.pnp.min_points:
        return None
    try:
        res = solve_pnp(keypoints_base, np.where(usable[:, None], uv, np.nan), camera,
                        weights=np.where(usable, conf, 0.0), config=config.pnp)
    except (PnPError, cv2.error):
        # cv2.error: OpenCV's SQPnP asserts on degenerate (near-coincident) point sets, which an
        # untrained network produces; core.pnp lets it through instead of raising PnPError.
        return None
    if res.rmse_px > config.max_rmse_px:
        return None
    return res.T_camera_base


class KeypointMetrics:
    """Accumulates per-frame results and reduces them to the metrics of the module docstring."""

    def __init__(self, *, max_add_threshold_m: float = 0.1):
        self.max_add_threshold_m = float(max_add_threshold_m)
        self._errors: list[np.ndarray] = []  # (K,) per frame, NaN = not counted
        self._ious: list[float] = []
        self._adds: list[float] = []

    def __len__(self) -> int:
        return len(self._errors)

    def update(self, *, pred_uv, gt_uv, gt_valid, T_est=None, T_gt=None, keypoints_base=None, mask_pred=None,
               mask_gt=None) -> None:
        """Add one frame.

        Args:
            pred_uv, gt_uv: ``(K, 2)`` camera pixels; gt_valid: ``(K,)`` keypoints that count.
            T_est: estimated ``T_camera_base`` or None (failure); ignored unless ``T_gt`` is given.
            T_gt, keypoints_base: ground truth pose and ``(K, 3)`` base-frame keypoints for ADD.
            mask_pred, mask_gt: robot probability and coverage on the same grid, or None.
        """
        self._errors.append(keypoint_errors(pred_uv, gt_uv, gt_valid))
        if mask_pred is not None and mask_gt is not None:
            iou = mask_iou(mask_pred, mask_gt)
            if not np.isnan(iou):
                self._ious.append(iou)
        if T_gt is not None:
            est = np.full((4, 4), np.nan) if T_est is None else T_est
            self._adds.append(float(add_distances(est, T_gt, keypoints_base)))

    @property
    def add_values_m(self) -> np.ndarray:
        return np.asarray(self._adds, dtype=np.float64)

    def compute(self) -> dict[str, float]:
        """``{name: value}`` for :data:`METRIC_NAMES` (NaN where nothing was measured) plus ``frames``."""
        errors = np.concatenate(self._errors) if self._errors else np.zeros(0)
        counted = errors[~np.isnan(errors)]
        out = {f"pck{int(t)}": pck(counted, t) for t in PCK_THRESHOLDS_PX}
        finite = counted[np.isfinite(counted)]
        out["median_px"] = float(np.median(counted)) if counted.size else float("nan")
        out["mean_px"] = float(np.mean(finite)) if finite.size else float("nan")
        out["mask_iou"] = float(np.mean(self._ious)) if self._ious else float("nan")
        adds = self.add_values_m
        out["add_auc"] = add_auc(adds, self.max_add_threshold_m) if adds.size else float("nan")
        out["add_median_mm"] = float(1e3 * np.median(adds)) if adds.size else float("nan")
        out["pose_success"] = float(100.0 * np.mean(np.isfinite(adds))) if adds.size else float("nan")
        out["frames"] = float(len(self._errors))
        return out
