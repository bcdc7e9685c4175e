"""Validate a model file exactly as the node runs it: ``load_detector`` + ``CameraToRobotEstimator``.

Each frame of a ``ctrnet-sim`` dataset goes through
:meth:`~ctrnet_ros.core.estimator.CameraToRobotEstimator.estimate` at the camera's full resolution
(letterbox into the model input, detection, mapping back, confidence gating, robust PnP, RMS
check), with the joint positions of the frame. The metrics are those of
:mod:`ctrnet_ros.train.metrics`, plus pose errors and the estimator's failure reasons.
"""

from __future__ import annotations

import collections
import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..core import se3
from ..core.camera import PinholeCamera
from ..core.estimator import CameraToRobotEstimator, Estimate, EstimatorConfig
from ..core.robot import KeypointSpec, RobotModel
from ..inference import load_detector
from ..sim.dataset import SimDataset
from .data import dataset_summary
from .metrics import KeypointMetrics

__all__ = ["validate_model", "format_metrics_table"]

logger = logging.getLogger(__name__)


def validate_model(model_path: str | os.PathLike, data_dir: str | os.PathLike, *,
                   out_dir: str | os.PathLike | None = None, max_frames: int = 0, backend: str = "auto",
                   device: str = "cpu", intra_op_threads: int = 0,
                   estimator_config: EstimatorConfig = EstimatorConfig(), progress: bool = True) -> dict[str, Any]:
    """Metrics of ``model_path`` (``.onnx`` or ``.pt``) on the dataset in ``data_dir``.

    Args:
        out_dir: if given, ``metrics.json`` and ``frames.csv`` (one row per frame) are written there.
        max_frames: use the first ``max_frames`` frames (0 = all).
        backend, device, intra_op_threads: passed to :func:`~ctrnet_ros.inference.load_detector`.

    Returns:
        the metrics of :class:`~ctrnet_ros.train.metrics.KeypointMetrics` plus ``translation_median_mm``,
        ``rotation_median_deg`` (successful frames), ``inference_median_ms``, ``failures``
        (estimator reason -> count), ``model``, ``data``.
    """
    detector = load_detector(model_path, backend=backend, device=device, intra_op_threads=intra_op_threads)
    ds = SimDataset(data_dir)
    spec = KeypointSpec.builtin(ds.spec.robot)
    robot = RobotModel.from_spec(spec)
    estimator = CameraToRobotEstimator(detector=detector, robot=robot, spec=spec, config=estimator_config)
    n = min(len(ds), max_frames) if max_frames else len(ds)
    metrics = KeypointMetrics()
    failures: collections.Counter = collections.Counter()
    trans_mm, rot_deg, infer_ms, rows = [], [], [], []
    for i in tqdm(range(n), desc=f"validate {Path(model_path).name}", disable=not progress):
        frame = ds[i]
        h, w = frame["rgb"].shape[:2]
        camera = PinholeCamera(K=frame["K"], D=np.zeros(5), width=w, height=h)
        joints = dict(zip(ds.joint_names, (float(v) for v in frame["joint_positions"])))
        cv2.setRNGSeed(i)  # RANSAC draws from OpenCV's global RNG: seed per frame for reproducible metrics
        try:
            est = estimator.estimate(frame["rgb"], camera, joints, stamp_ns=int(frame["frame_index"]))
        except cv2.error as exc:
            # OpenCV's SQPnP asserts on degenerate (near-coincident) point sets and core.pnp lets the
            # cv2.error through. Count the frame as a pose failure, but still score its keypoints:
            # redo the estimator's detection steps (letterbox, detect, map back).
            logger.warning("frame %d: the estimator raised cv2.error (%s); counted as a pose failure", i,
                           str(exc).strip().splitlines()[-1])
            tf = camera.letterbox_transform(*detector.input_size)
            det = detector.detect(tf.apply_image(frame["rgb"]))
            est = Estimate(stamp_ns=int(frame["frame_index"]), ok=False, reason="pnp_opencv_error", detail=str(exc),
                           keypoints_uv=tf.invert_coords(det.keypoints_uv), confidence=det.confidence, mask=det.mask,
                           input_transform=tf)
        uv = est.keypoints_uv if est.keypoints_uv is not None else np.full((len(spec), 2), np.nan)
        mask_gt = None
        if est.mask is not None and est.input_transform is not None:
            mask_in = est.input_transform.apply_image(frame["mask"].astype(np.float32))
            mask_gt = cv2.resize(mask_in, (est.mask.shape[1], est.mask.shape[0]), interpolation=cv2.INTER_AREA)
        metrics.update(pred_uv=uv, gt_uv=frame["keypoints_uv"], gt_valid=frame["in_image"],
                       T_est=est.T_camera_base if est.ok else None, T_gt=frame["T_camera_base"],
                       keypoints_base=frame["keypoints_base"], mask_pred=est.mask, mask_gt=mask_gt)
        if est.ok:
            trans_mm.append(1e3 * se3.translation_error(est.T_camera_base, frame["T_camera_base"]))
            rot_deg.append(se3.rotation_error_deg(est.T_camera_base, frame["T_camera_base"]))
        else:
            failures[est.reason or "unknown"] += 1
        if "inference" in est.timings_ms:
            infer_ms.append(est.timings_ms["inference"])
        rows.append({"frame": int(frame["frame_index"]), "ok": int(est.ok), "reason": est.reason or "",
                     "add_mm": 1e3 * metrics.add_values_m[-1],
                     "rmse_px": est.rmse_px, "translation_mm": trans_mm[-1] if est.ok else float("nan"),
                     "rotation_deg": rot_deg[-1] if est.ok else float("nan")})
    result: dict[str, Any] = metrics.compute()
    result.update(
        translation_median_mm=float(np.median(trans_mm)) if trans_mm else float("nan"),
        rotation_median_deg=float(np.median(rot_deg)) if rot_deg else float("nan"),
        inference_median_ms=float(np.median(infer_ms)) if infer_ms else float("nan"),
        failures=dict(failures),
        model=str(model_path),
        model_input_size=list(detector.input_size),
        data=dataset_summary(ds),
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
        with (out / "frames.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["frame"])
            writer.writeheader()
            writer.writerows(rows)
        logger.info("wrote %s and %s", out / "metrics.json", out / "frames.csv")
    return result


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A small Markdown table of the headline metrics."""
    lines = ["| metric | value |", "|---|---|"]
    spec = [("frames", "frames", "{:.0f}"), ("PCK@2 px (%)", "pck2", "{:.1f}"), ("PCK@5 px (%)", "pck5", "{:.1f}"),
            ("PCK@10 px (%)", "pck10", "{:.1f}"), ("median keypoint error (px)", "median_px", "{:.2f}"),
            ("mean keypoint error (px, finite)", "mean_px", "{:.2f}"), ("mask IoU", "mask_iou", "{:.3f}"),
            ("ADD AUC 0-100 mm", "add_auc", "{:.1f}"), ("median ADD (mm)", "add_median_mm", "{:.1f}"),
            ("frames with a pose (%)", "pose_success", "{:.1f}"),
            ("median translation error (mm)", "translation_median_mm", "{:.1f}"),
            ("median rotation error (deg)", "rotation_median_deg", "{:.2f}"),
            ("median inference (ms)", "inference_median_ms", "{:.1f}")]
    for label, key, fmt in spec:
        if key in metrics:
            v = metrics[key]
            lines.append(f"| {label} | {fmt.format(v) if isinstance(v, (int, float)) else v} |")
    if metrics.get("failures"):
        lines.append(f"| failures | {', '.join(f'{k}: {v}' for k, v in sorted(metrics['failures'].items()))} |")
    return "\n".join(lines)
