"""``ctrnet-export``: a training checkpoint -> single-file ONNX model + model card YAML.

Example::

    ctrnet-export --checkpoint runs/cpu_small/best.pt --out models/panda_ctrnet.onnx --val data/sim_val_640

writes ``models/panda_ctrnet.onnx`` (via :func:`ctrnet_ros.net.export.export_onnx`: named inputs
and outputs, dynamic batch, opset 18, weights inside, ``keypoint_names`` / ``robot`` / training
summary in its metadata, ONNX Runtime vs torch parity check) and ``models/panda_ctrnet.yaml``, the
model card: architecture, parameters, input size and normalisation, keypoint names in order,
training data and duration, validation metrics, parity error, file size, intended use.

With ``--val`` the exported ONNX file itself is validated through ``load_detector`` +
``CameraToRobotEstimator`` (as ``ctrnet-train validate`` does); otherwise the card reports the
validation metrics stored in the checkpoint at training time.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml

__all__ = ["ExportError", "export_checkpoint", "main", "MAX_MODEL_BYTES"]

logger = logging.getLogger("ctrnet_export")

#: Shipped models must stay below this (package size; the issue's limit).
MAX_MODEL_BYTES = 30 * 1000 * 1000

INTENDED_USE = (
    "Keypoint detection of the robot named under keypoints.robot in RGB images, for markerless "
    "camera-to-robot calibration with ctrnet_ros (CameraToRobotEstimator: letterbox into the input size, "
    "decode keypoints, robust PnP with the joint states at the image stamp). Start-up model for the node and "
    "initialisation for self-supervised refinement on the target camera.")
LIMITATIONS = (
    "Trained only on synthetic images (MuJoCo renders with domain randomisation); accuracy on real images is "
    "lower until the model is refined on them. Expect failures when fewer than four keypoints are visible, under "
    "heavy occlusion, with grippers or tools not seen in training, robot colours far from the URDF's, and at "
    "image scales outside the training range (robot height roughly 20-90 % of the image). The confidence is the "
    "heatmap peak probability, not a calibrated error estimate. Validation figures are on simulated data.")


class ExportError(RuntimeError):
    """The checkpoint cannot be exported (unreadable, incomplete, too large, failed parity)."""


def _plain(value: Any) -> Any:
    """YAML-friendly copy: tuples -> lists, numpy scalars -> Python, floats rounded to 6 significant digits."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if not math.isfinite(value) else float(f"{value:.6g}")
    return value


def _parity_images(dirs: Sequence[str], input_size: tuple[int, int], heatmap_stride: int, count: int):
    """Up to ``count`` letterboxed frames (B, 3, H, W) from the first readable dataset in ``dirs``, or None."""
    from ..sim.dataset import DatasetError
    from .data import KeypointTrainDataset, open_datasets

    for d in dirs:
        if not d or not Path(d, "index.json").is_file():
            continue
        try:
            ds = KeypointTrainDataset(open_datasets([d], allow_incomplete=True), input_size=input_size,
                                      heatmap_stride=heatmap_stride, sigma=1.0, augment=None, max_frames=count)
        except DatasetError:
            continue
        return torch.stack([ds[i]["image"] for i in range(len(ds))]), d
    return None, None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _training_summary(extra: dict[str, Any]) -> dict[str, Any]:
    cfg = extra.get("train_config") or {}
    seconds = float(extra.get("train_seconds", float("nan")))
    return {
        "preset": cfg.get("preset"),
        "data": extra.get("data"),
        "steps": extra.get("step"),
        "total_steps": extra.get("total_steps"),
        "epochs": extra.get("epoch"),
        "images_seen": extra.get("images_seen"),
        "batch_size": cfg.get("batch_size"),
        "wall_clock_s": seconds,
        "wall_clock_h": seconds / 3600.0 if math.isfinite(seconds) else None,
        "hardware": extra.get("hardware"),
        "torch_version": extra.get("torch_version"),
        "seed": cfg.get("seed"),
        "config": cfg,
    } | _warm_start_summary(extra, seconds)


def _warm_start_summary(extra: dict[str, Any], seconds: float) -> dict[str, Any]:
    """For a warm-started run (``--init``): the chain of earlier runs and the training time of all of them."""
    chain, node = [], extra.get("init_from")
    while isinstance(node, dict):
        chain.append({k: node.get(k) for k in ("checkpoint", "preset", "step", "images_seen", "train_seconds")})
        node = node.get("init_from")
    if not chain:
        return {}
    total = seconds + sum(float(c.get("train_seconds") or 0.0) for c in chain)
    images = int(extra.get("images_seen") or 0) + sum(int(c.get("images_seen") or 0) for c in chain)
    return {"warm_start_from": chain, "total_wall_clock_h_incl_warm_start": total / 3600.0,
            "total_images_seen_incl_warm_start": images}


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, val: str | None = None,
                      val_frames: int = 0, robot: str | None = None, opset: int = 18, atol: float = 1e-3,
                      parity_frames: int = 8, max_bytes: int = MAX_MODEL_BYTES, progress: bool = True,
                      int8: bool = False, calib: str | None = None, calib_frames: int = 64,
                      torch_checkpoint: bool = False) -> dict:
    """Export ``checkpoint`` to ``out`` (.onnx) and write the model card beside it (.yaml); returns the card.

    Args:
        val: dataset to validate the exported ONNX file on (through the estimator); None: use the
            checkpoint's stored validation metrics.
        val_frames: validate on the first N frames (0 = all).
        robot: robot name for the card when the checkpoint does not store one.
        atol: parity tolerance (input pixels for confident keypoints, probability for heatmaps).
        parity_frames: real frames (from ``val`` or the training data, if present) added to the
            parity check, so that keypoint parity is tested on confident peaks.
        max_bytes: refuse (and delete) an ONNX file larger than this.
        int8: also write ``<stem>_int8.onnx`` (static INT8 quantization, for CPU-bound hosts) and its
            card ``<stem>_int8.yaml``, validated on ``val`` like the float model.
        calib: dataset for the INT8 activation ranges (default: the checkpoint's training data).
        calib_frames: frames used for calibration.
        torch_checkpoint: also write ``<stem>.pt``, the weights-only checkpoint behind the ONNX file
            (no optimizer state): for ``ctrnet-train refresh --init`` and the node's torch backend.

    Raises:
        ExportError: with a message saying what is wrong.
    """
    from ..net.export import ExportParityError, export_onnx
    from ..net.registry import ModelFileError, load_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"--out must name a .onnx file, got {out}")
    try:
        model, config, extra = load_checkpoint(checkpoint)
    except ModelFileError as exc:
        raise ExportError(f"cannot export {checkpoint}: {exc}") from exc
    if "keypoint_names" not in extra:
        raise ExportError(f"{checkpoint} has no keypoint_names entry; it was not written by ctrnet-train")
    names = [str(n) for n in extra["keypoint_names"]]
    if len(names) != model.num_keypoints:
        raise ExportError(f"{checkpoint}: {len(names)} keypoint names for a {model.num_keypoints}-keypoint model")
    input_size = tuple(int(v) for v in extra.get("input_size", config.input_size))
    decode_method = str(extra.get("decode_method", "quadratic"))
    robot = str(extra.get("robot") or robot or "unknown")
    training = _training_summary(extra)
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())  # float32 weights: a lower bound of the file
    if weight_bytes > max_bytes:
        raise ExportError(f"{checkpoint}: {weight_bytes / 1e6:.1f} MB of float32 weights alone are over the "
                          f"{max_bytes / 1e6:.0f} MB limit; export a smaller architecture")

    candidates = [val] if val else []
    candidates += [(extra.get("val_data") or {}).get("dir")] + [d.get("dir") for d in extra.get("data") or []]
    parity_images, parity_source = _parity_images(candidates, input_size, model.heatmap_stride, parity_frames)
    metadata = {"keypoint_names": names, "robot": robot,
                "training": json.dumps(_plain({k: v for k, v in training.items() if k != "config"}))}
    try:
        report = export_onnx(model, out, input_size, opset=opset, decode_method=decode_method, metadata=metadata,
                             atol=atol, parity_images=parity_images)
    except ExportParityError as exc:
        raise ExportError(f"parity check failed: {exc}") from exc
    if report["file_bytes"] > max_bytes:
        out.unlink(missing_ok=True)
        raise ExportError(f"{out} would be {report['file_bytes'] / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB "
                          f"limit; export a smaller architecture")

    if val:
        validation = _validate_file(out, val, val_frames, progress)
    else:
        stored = extra.get("best_metrics") or extra.get("val_metrics") or {}
        validation = {"source": "stored in the checkpoint (training-time validation: torch, batched, same "
                                "keypoint decoding and PnP gating as the estimator)" if stored else
                                "none (no --val and no validation in the checkpoint)",
                      "data": extra.get("val_data"), "metrics": stored}

    mean = list(getattr(config, "mean", ()))
    std = list(getattr(config, "std", ()))
    card = {
        "model": {"name": out.stem, "file": out.name, "format": "ONNX, single file (weights inside)",
                  "opset": report["opset"], "exporter": report["exporter"], "file_bytes": report["file_bytes"],
                  "file_mb": report["file_bytes"] / 1e6, "max_mb": max_bytes / 1e6, "sha256": _sha256(out),
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "source_checkpoint": str(checkpoint)},
        "architecture": {"arch": str(extra.get("train_config", {}).get("arch") or getattr(model, "arch", "")),
                         "parameters": int(sum(p.numel() for p in model.parameters())),
                         "heatmap_stride": int(model.heatmap_stride), "has_mask": bool(report["has_mask"]),
                         "decode_method": decode_method, "config": dataclasses.asdict(config)},
        "input": {"name": report["input_name"], "size_wh": list(input_size), "dynamic_batch": report["dynamic_batch"],
                  "format": "float32 RGB in [0, 1], NCHW",
                  "normalisation": {"mean": mean, "std": std, "applied": "inside the graph"},
                  "preprocessing": "letterbox the camera image into size_wh (PinholeCamera.letterbox_transform; "
                                   "a plain resize when the aspect ratio matches) and map keypoints back with "
                                   "the inverse transform, as CameraToRobotEstimator does"},
        "outputs": {"keypoints": "(B, K, 2) (u, v) network-input pixels, OpenCV pixel-centre convention",
                    "confidence": "(B, K) heatmap peak probability in [0, 1]",
                    "mask": "(B, 1, H/s, W/s) robot probability" + ("" if report["has_mask"] else " (all zeros)"),
                    "heatmaps": "(B, K, H/s, W/s) keypoint probabilities"},
        "keypoints": {"robot": robot, "names": names},
        "training": training,
        "validation": validation,
        "parity": {"keypoints_max_abs_px": report["parity_max_abs"], "by_output": report["parity_max_abs_by_output"],
                   "keypoints_checked": report["parity_keypoints_checked"],
                   "keypoints_total": report["parity_keypoints_total"], "batch_sizes": report["parity_batch_sizes"],
                   "real_images_from": parity_source, "atol": atol},
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
    }
    if extra.get("refresh"):  # a self-supervised refresh on top of the pretraining above
        card["refresh"] = extra["refresh"]
    if torch_checkpoint:
        from ..net.registry import save_checkpoint
        from .pretrain import without_resume_state

        pt = out.with_suffix(".pt")
        save_checkpoint(pt, model, config, without_resume_state(extra), arch=card["architecture"]["arch"] or None)
        card["model"]["torch_checkpoint"] = {"file": pt.name, "file_bytes": pt.stat().st_size, "sha256": _sha256(pt),
                                             "use": "ctrnet-train refresh --init, or the node with backend torch"}
    card = _plain(card)
    card_path = _write_card(out, card)
    logger.info("wrote %s (%.1f MB, keypoint parity %s px) and %s", out, report["file_bytes"] / 1e6,
                report["parity_max_abs"], card_path)
    if int8:
        calib_dirs = [calib] if calib else [d.get("dir") for d in extra.get("data") or []] + [val]
        _export_int8(out, card, calib_dirs, input_size, int(model.heatmap_stride), calib_frames, val, val_frames,
                     progress)
    return card


def _validate_file(path: Path, val: str, val_frames: int, progress: bool) -> dict[str, Any]:
    """The card's validation section for an ONNX file, validated through the node's estimator."""
    from .validate import validate_model

    metrics = validate_model(path, val, max_frames=val_frames, progress=progress)
    return {"source": "ctrnet-export --val: this ONNX file through load_detector + CameraToRobotEstimator at "
                      "the camera's full resolution",
            "data": metrics.pop("data"),
            "metrics": {k: v for k, v in metrics.items() if k not in ("model", "model_input_size")}}


def _write_card(onnx_path: Path, card: dict[str, Any]) -> Path:
    card_path = onnx_path.with_suffix(".yaml")
    card_path.write_text("# Model card written by ctrnet-export; see ctrnet_ros/train/export_cli.py\n"
                         + yaml.safe_dump(card, sort_keys=False, width=110), encoding="utf-8")
    return card_path


def _export_int8(out: Path, card: dict[str, Any], calib_dirs: Sequence[str | None], input_size, heatmap_stride: int,
                 calib_frames: int, val: str | None, val_frames: int, progress: bool) -> dict[str, Any]:
    """``<stem>_int8.onnx`` and its card: the float card with the file, quantization and validation replaced."""
    from ..net.export import quantize_int8

    images, source = _parity_images([d for d in calib_dirs if d], input_size, heatmap_stride, calib_frames)
    if images is None:
        raise ExportError("--int8 needs calibration frames: pass --calib DIR (a ctrnet-sim dataset)")
    q_out = out.with_name(out.stem + "_int8.onnx")
    try:
        q = quantize_int8(out, q_out, images)
    except Exception as exc:  # onnxruntime.quantization raises assorted types
        raise ExportError(f"INT8 quantization of {out} failed: {type(exc).__name__}: {exc}") from exc
    q_card = json.loads(json.dumps(card))  # deep copy of plain data
    q_card["model"].update(name=q_out.stem, file=q_out.name, file_bytes=q["file_bytes"], file_mb=q["file_bytes"] / 1e6,
                           sha256=_sha256(q_out), float_model=out.name,
                           created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    q_card["quantization"] = {"method": "static INT8, QDQ, per-channel weights, uint8 activations "
                                        "(onnxruntime.quantization.quantize_static)",
                              "calibration_data": source, **q,
                              "agreement_note": "keypoint displacement against the float model, input pixels, on "
                                                "the calibration frames where the float model is confident"}
    q_card["parity"] = {"against": "float model " + out.name, "keypoints_median_abs_px": q["keypoints_median_abs_px"],
                        "keypoints_max_abs_px": q["keypoints_max_abs_px"]}
    if val:
        q_card["validation"] = _validate_file(q_out, val, val_frames, progress)
    q_card = _plain(q_card)
    card_path = _write_card(q_out, q_card)
    logger.info("wrote %s (%.1f MB, keypoints vs float: median %.3g px, max %.3g px) and %s", q_out,
                q["file_bytes"] / 1e6, q["keypoints_median_abs_px"] or float("nan"),
                q["keypoints_max_abs_px"] or float("nan"), card_path)
    return q_card


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctrnet-export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PT", help="checkpoint written by ctrnet-train (best.pt)")
    p.add_argument("--out", required=True, metavar="ONNX", help="output .onnx; the card goes beside it as .yaml")
    p.add_argument("--val", default=None, metavar="DIR", help="validate the exported model on this dataset")
    p.add_argument("--val-frames", type=int, default=0, metavar="N", help="first N validation frames (0: all)")
    p.add_argument("--robot", default=None, help="robot name for the card if the checkpoint has none")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--atol", type=float, default=1e-3, help="parity tolerance (px for keypoints)")
    p.add_argument("--max-mb", type=float, default=MAX_MODEL_BYTES / 1e6, help="refuse larger models")
    p.add_argument("--int8", action="store_true",
                   help="also write <out stem>_int8.onnx + card: static INT8 quantization for CPU-bound hosts")
    p.add_argument("--calib", default=None, metavar="DIR",
                   help="dataset for the INT8 activation ranges (default: the checkpoint's training data)")
    p.add_argument("--calib-frames", type=int, default=64, metavar="N")
    p.add_argument("--torch-checkpoint", action="store_true",
                   help="also write <out stem>.pt: the weights-only checkpoint (refresh --init, torch backend)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        card = export_checkpoint(args.checkpoint, args.out, val=args.val, val_frames=args.val_frames,
                                 robot=args.robot, opset=args.opset, atol=args.atol,
                                 max_bytes=int(args.max_mb * 1e6), progress=not args.quiet, int8=args.int8,
                                 calib=args.calib, calib_frames=args.calib_frames,
                                 torch_checkpoint=args.torch_checkpoint)
    except ExportError as exc:
        logger.error("%s", exc)
        return 1
    m = card["validation"]["metrics"]
    if m:
        logger.info("validation: %s", ", ".join(f"{k} {v}" for k, v in m.items() if not isinstance(v, dict)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
