"""Metrics, plots and a Markdown report from an :class:`~ctrnet_ros.eval.replay.EvalResult`.

Definitions (also written into ``report.md``):

* **Per-frame error**: the per-frame estimate (``Estimate.T_camera_base``) against the ground-truth
  segment the frame's time falls in. *Translation error* is the distance between the estimated and
  the true **camera position in the robot base frame** (the translation of ``T_base_camera``), which
  unlike the translation of ``T_camera_base`` does not mix in rotation error. *Rotation error* is the
  geodesic angle between the two rotations.
* **ADD** (DREAM/CtRNet): mean distance between the robot keypoints (base frame, forward kinematics at
  the image stamp) under the estimated and the true ``T_camera_base``. AUC over thresholds 0..0.1 m,
  percent; a frame without an estimate counts as a failure (ADD = inf).
* **Fused**: what the node would publish after each frame (``FrameResult.T_camera_base``: the fused pose
  in static mode, the filtered pose in moving mode), taken at the last frame of each ground-truth
  segment; the headline is the worst segment. *Seconds to 2 mm*: from the segment's start until the
  fused translation error drops below 2 mm and stays there to the segment's end (no published pose
  counts as above); the headline is the slowest segment, null if any segment never gets there.
* **Latency**: the estimator's own time per frame (FK, letterbox, inference, PnP), over frames where it
  ran the detector; bag reading, decoding and fusion are not included.

Frames in a gap of the ground truth are counted in ``frames`` but in no error metric.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .metrics import add_accuracy_curve, add_auc
from .replay import EvalResult, FrameRecord

__all__ = ["ADD_MAX_THRESHOLD_M", "CONVERGED_TRANS_M", "REQUIRED_KEYS", "compute_metrics", "write_report",
           "format_summary", "plot_add_curve", "plot_error_over_time", "plot_reprojection_histogram",
           "overlay_grid"]

logger = logging.getLogger(__name__)

ADD_MAX_THRESHOLD_M = 0.1  # ADD AUC threshold range, metres
CONVERGED_TRANS_M = 0.002  # "seconds to 2 mm" threshold, metres
#: the keys metrics.json always has (issue #6); more follow them
REQUIRED_KEYS = ("frames", "frames_with_estimate", "add_auc", "add_mean_m", "add_median_m", "trans_err_median_m",
                 "rot_err_median_deg", "fused", "latency_ms")

FIGURES = {
    "add_auc": "add_auc.png",
    "error_over_time": "error_over_time.png",
    "reprojection": "reprojection_error_hist.png",
    "overlays": "overlay_samples.png",
}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------
def _finite(values) -> np.ndarray:
    a = np.asarray(list(values), dtype=np.float64)
    return a[np.isfinite(a)]


def _median(values) -> float | None:
    a = _finite(values)
    return float(np.median(a)) if a.size else None


def _percentile(values, q: float) -> float | None:
    a = _finite(values)
    return float(np.percentile(a, q)) if a.size else None


def _seconds_to_threshold(frames: list[FrameRecord], start_s: float, threshold_m: float) -> float | None:
    """Seconds from ``start_s`` until the fused error is below ``threshold_m`` for every later frame."""
    if not frames:
        return None
    settled = None
    for f in frames:
        good = math.isfinite(f.fused_trans_err_m) and f.fused_trans_err_m < threshold_m
        if not good:
            settled = None
        elif settled is None:
            settled = f.t_rel
    return None if settled is None else max(0.0, settled - start_s)


def _reprojection_errors(result: EvalResult) -> tuple[np.ndarray, np.ndarray]:
    """(errors of keypoints the estimator used (conf >= min_confidence), errors of the others), camera px."""
    used, low = [], []
    for f in result.frames:
        if f.confidence is None or f.keypoints_uv_gt is None:
            continue
        err = f.reprojection_errors_px
        ok = np.isfinite(err)
        conf_ok = f.confidence >= result.min_confidence
        used.append(err[ok & conf_ok])
        low.append(err[ok & ~conf_ok])
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    return cat(used), cat(low)


def segment_metrics(result: EvalResult) -> list[dict[str, Any]]:
    """One dict per ground-truth segment overlapping the bag (see :func:`compute_metrics` ``segments``)."""
    out = []
    for span in result.segments:
        frames = [f for f in result.frames if f.segment == span.index]
        last = frames[-1] if frames else None
        has_fused = last is not None and last.T_camera_base_fused is not None
        out.append({
            "index": span.index,
            "start_s": span.start_s,
            "end_s": span.end_s,
            "frames": len(frames),
            "frames_with_estimate": sum(f.ok for f in frames),
            "trans_err_median_m": _median(f.trans_err_m for f in frames),
            "rot_err_median_deg": _median(f.rot_err_deg for f in frames),
            "fused_trans_err_m": last.fused_trans_err_m if has_fused else None,
            "fused_rot_err_deg": last.fused_rot_err_deg if has_fused else None,
            "fused_source": last.source if last is not None else None,
            "seconds_to_2mm": _seconds_to_threshold(frames, span.start_s, CONVERGED_TRANS_M),
            "bumps_detected_at_s": [f.t_rel for f in frames if f.fusion_bumped],
        })
    return out


def compute_metrics(result: EvalResult) -> dict[str, Any]:
    """The ``metrics.json`` content: :data:`REQUIRED_KEYS` first, then extras. Missing values are None."""
    frames = result.frames
    evaluated = [f for f in frames if f.segment is not None]
    with_est = [f for f in evaluated if f.ok]
    add_values = [f.add_m for f in evaluated]  # inf for failed frames
    segs = segment_metrics(result)
    counted = [s for s in segs if s["frames"] > 0]

    def worst(key):
        vals = [s[key] for s in counted]
        return None if not vals or any(v is None for v in vals) else float(max(vals))

    used, low = _reprojection_errors(result)
    latencies = [f.latency_ms for f in frames]
    metrics: dict[str, Any] = {
        "frames": len(frames),
        "frames_with_estimate": sum(f.ok for f in frames),
        "add_auc": add_auc(add_values, ADD_MAX_THRESHOLD_M) if evaluated else None,
        "add_mean_m": float(np.mean(_finite(f.add_m for f in with_est))) if with_est else None,
        "add_median_m": _median(f.add_m for f in with_est),
        "trans_err_median_m": _median(f.trans_err_m for f in with_est),
        "rot_err_median_deg": _median(f.rot_err_deg for f in with_est),
        "fused": {
            "trans_err_m": worst("fused_trans_err_m"),
            "rot_err_deg": worst("fused_rot_err_deg"),
            "seconds_to_2mm": worst("seconds_to_2mm"),
        },
        "latency_ms": {"median": _median(latencies), "p95": _percentile(latencies, 95)},
        # -- extras ----------------------------------------------------------------------------
        "frames_evaluated": len(evaluated),
        "failures": dict(sorted(result.reasons.items(), key=lambda kv: (-kv[1], str(kv[0])))),
        "add_auc_max_threshold_m": ADD_MAX_THRESHOLD_M,
        "trans_err_p95_m": _percentile((f.trans_err_m for f in with_est), 95),
        "rot_err_p95_deg": _percentile((f.rot_err_deg for f in with_est), 95),
        "segments": segs,
        "reprojection_px": {"median": _median(used), "p95": _percentile(used, 95), "keypoints": int(used.size),
                            "low_confidence_keypoints": int(low.size)},
        "latency_frames": int(_finite(latencies).size),
        "bag": str(result.bag),
        "bag_duration_s": result.bag_duration_s,
        "model": result.model,
        "robot": result.robot,
        "mode": result.mode,
        "image_topic": result.image_topic,
        "image_msgtype": result.image_msgtype,
        "wall_s": result.wall_s,
        "warnings": list(result.warnings),
    }
    return _json_safe(metrics)


def _json_safe(x):
    """Replace NaN/inf by None and numpy scalars by Python ones (strict JSON)."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _figure(width_in: float, height_in: float, nrows: int = 1, sharex: bool = False):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, 1, sharex=sharex, squeeze=False)[:, 0]
    return fig, axes


def plot_add_curve(result: EvalResult, path: str | os.PathLike, *, auc: float | None) -> Path:
    """Fraction of frames with ADD <= threshold, thresholds 0..100 mm (failed frames never count)."""
    values = [f.add_m for f in result.frames if f.segment is not None]
    t, acc = add_accuracy_curve(values, ADD_MAX_THRESHOLD_M, num=201)
    fig, (ax,) = _figure(5.0, 3.6)
    ax.plot(t * 1e3, acc * 100.0, color="tab:blue", lw=2)
    ax.fill_between(t * 1e3, 0, acc * 100.0, color="tab:blue", alpha=0.15)
    ax.set_xlim(0, ADD_MAX_THRESHOLD_M * 1e3)
    ax.set_ylim(0, 100)
    ax.set_xlabel("ADD threshold [mm]")
    ax.set_ylabel("frames with ADD <= threshold [%]")
    label = "n/a" if auc is None else f"{auc:.1f} %"
    ax.set_title(f"ADD accuracy: AUC {label} ({len(values)} frames, failures count as misses)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return Path(path)


def plot_error_over_time(result: EvalResult, path: str | os.PathLike) -> Path:
    """Translation (mm) and rotation (deg) error against time: per-frame dots, the fused line, segment edges."""
    frames = [f for f in result.frames if f.segment is not None]
    fig, (ax_t, ax_r) = _figure(8.0, 5.2, nrows=2, sharex=True)
    t = np.array([f.t_rel for f in frames])
    floor = {"t": 1e-4, "r": 1e-5}  # log axes: exact zeros (oracle tests) are drawn at the floor
    series = [
        (ax_t, "t", "translation error [mm] (camera position)", [f.trans_err_m * 1e3 for f in frames],
         [f.fused_trans_err_m * 1e3 for f in frames], CONVERGED_TRANS_M * 1e3),
        (ax_r, "r", "rotation error [deg]", [f.rot_err_deg for f in frames], [f.fused_rot_err_deg for f in frames],
         None),
    ]
    failed_t = [f.t_rel for f in frames if not f.ok]
    bumps = [f.t_rel for f in result.frames if f.fusion_bumped]
    fused_label = "fused (published)" if result.mode == "static" else "filtered (published)"
    for ax, key, ylabel, per_frame, fused, hline in series:
        pf = np.maximum(np.asarray(per_frame, dtype=float), floor[key])
        fu = np.maximum(np.asarray(fused, dtype=float), floor[key])
        if len(t):
            ax.plot(t, pf, ".", ms=3.5, color="tab:gray", alpha=0.8, label="per-frame estimate")
            ax.plot(t, fu, "-", drawstyle="steps-post", lw=1.8, color="tab:blue", label=fused_label)
        if hline is not None:
            ax.axhline(hline, color="tab:green", ls=":", lw=1, label="2 mm")
        for i, span in enumerate(result.segments):
            if i > 0:
                ax.axvline(span.start_s, color="k", ls="--", lw=1,
                           label="ground-truth segment boundary" if i == 1 else None)
        for i, b in enumerate(bumps):
            ax.axvline(b, color="tab:red", ls=":", lw=1, label="bump detected by fusion" if i == 0 else None)
        if failed_t:
            ax.plot(failed_t, np.full(len(failed_t), 0.02), "|", color="tab:red", ms=6,
                    transform=ax.get_xaxis_transform(), label="no estimate")
        finite = _finite(np.concatenate([pf, fu])) if len(t) else np.zeros(0)
        if finite.size:
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no pose in any frame", ha="center", va="center", transform=ax.transAxes,
                    color="tab:red")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3, which="both")
    ax_r.set_xlabel("time since the bag's first message [s]")
    handles, labels = ax_t.get_legend_handles_labels()
    ax_t.legend(handles, labels, fontsize=7, loc="upper right", ncols=2)
    if result.segments:
        ax_r.set_xlim(0, max(result.bag_duration_s, 1e-3))
    ax_t.set_title(f"error over time: {result.bag.name} ({result.mode} mode)", fontsize=9)
    fig.savefig(path)
    return Path(path)


def plot_reprojection_histogram(result: EvalResult, path: str | os.PathLike) -> Path:
    """Histogram of |detected keypoint - ground-truth projection| (camera px), used vs low-confidence keypoints."""
    used, low = _reprojection_errors(result)
    fig, (ax,) = _figure(5.0, 3.6)
    both = np.concatenate([used, low])
    if both.size:
        hi = max(float(np.percentile(both, 99)), 1e-3)
        bins = np.linspace(0.0, hi, 41)
        ax.hist([np.minimum(used, hi), np.minimum(low, hi)], bins=bins, stacked=True,
                color=["tab:blue", "tab:orange"],
                label=[f"used (conf >= {result.min_confidence:g}): {used.size}",
                       f"low confidence: {low.size}"])
        ax.legend(fontsize=7)
        med = f"median {np.median(used):.2f} px" if used.size else "no keypoint used"
        ax.set_title(f"keypoint reprojection error ({med}; last bin: >= {hi:.3g} px)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no detections to compare", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("keypoint reprojection error", fontsize=9)
    ax.set_xlabel("|detected - ground-truth projection| [px, camera image]")
    ax.set_ylabel("keypoints")
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return Path(path)


# BGR colours of the overlay
_GT_BGR = (60, 200, 60)
_DET_BGR = (40, 40, 230)
_LOW_BGR = (160, 160, 160)
_FUSED_BGR = (230, 140, 30)


def _draw_frame(result: EvalResult, f: FrameRecord, rgb: np.ndarray, scale: float, tile_w: int) -> np.ndarray:
    """One overlay tile (BGR): GT keypoints (green circles), detections (red x; grey: low confidence),
    fused-pose reprojection (blue +), and a caption."""
    up = tile_w / rgb.shape[1]
    img = cv2.resize(np.ascontiguousarray(rgb[..., ::-1]), (tile_w, round(rgb.shape[0] * up)),
                     interpolation=cv2.INTER_NEAREST if up >= 2 else cv2.INTER_LINEAR)
    s = scale * up  # camera px -> tile px

    def pt(uv):
        # camera pixel centres (OpenCV convention) -> tile pixel centres
        return (int(round((uv[0] + 0.5) * s - 0.5)), int(round((uv[1] + 0.5) * s - 0.5)))

    def ok(uv):
        return uv is not None and np.all(np.isfinite(uv)) and abs(uv[0]) < 1e5 and abs(uv[1]) < 1e5

    if f.keypoints_uv_gt is not None:
        for uv in f.keypoints_uv_gt:
            if ok(uv):
                cv2.circle(img, pt(uv), 6, _GT_BGR, 1, cv2.LINE_AA)
    if f.T_camera_base_fused is not None and f.keypoints_base is not None and result.camera is not None:
        for uv in result.camera.project_from(f.T_camera_base_fused, f.keypoints_base):
            if ok(uv):
                cv2.drawMarker(img, pt(uv), _FUSED_BGR, cv2.MARKER_CROSS, 9, 1, cv2.LINE_AA)
    if f.keypoints_uv is not None:
        for uv, c in zip(f.keypoints_uv, f.confidence):
            if ok(uv):
                colour = _DET_BGR if c >= result.min_confidence else _LOW_BGR
                cv2.drawMarker(img, pt(uv), colour, cv2.MARKER_TILTED_CROSS, 9, 1, cv2.LINE_AA)
    status = "ok" if f.ok else (f.reason or "failed")
    err = f" {f.trans_err_m * 1e3:.1f} mm" if math.isfinite(f.trans_err_m) else ""
    fused = f" fused {f.fused_trans_err_m * 1e3:.1f} mm" if math.isfinite(f.fused_trans_err_m) else ""
    caption = f"#{f.index} t={f.t_rel:.2f}s {status}{err}{fused}"
    bar = np.full((18, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, caption, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def overlay_grid(result: EvalResult, path: str | os.PathLike, *, columns: int = 3, tile_w: int = 320) -> Path | None:
    """A grid PNG of the kept sample frames with keypoints drawn; None if no sample was kept."""
    tiles = []
    by_index = {f.index: f for f in result.frames}
    for index, (rgb, scale) in sorted(result.samples.items()):
        if index in by_index:
            tiles.append(_draw_frame(result, by_index[index], rgb, scale, tile_w))
    if not tiles:
        return None
    h = max(t.shape[0] for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    cols = min(columns, len(tiles))
    gap = 4
    legend_h = 22
    sheet = np.full((rows * (h + gap) + legend_h, cols * (tile_w + gap) - gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = r * (h + gap), c * (tile_w + gap)
        sheet[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    y = sheet.shape[0] - 7
    x = 4
    for text, colour, marker in (("ground truth", _GT_BGR, None), ("detected", _DET_BGR, cv2.MARKER_TILTED_CROSS),
                                 ("low confidence", _LOW_BGR, cv2.MARKER_TILTED_CROSS),
                                 ("fused pose reprojection", _FUSED_BGR, cv2.MARKER_CROSS)):
        if marker is None:
            cv2.circle(sheet, (x + 5, y - 4), 5, colour, 1, cv2.LINE_AA)
        else:
            cv2.drawMarker(sheet, (x + 5, y - 4), colour, marker, 9, 1, cv2.LINE_AA)
        cv2.putText(sheet, text, (x + 14, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        x += 14 + 7 * len(text) + 14
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"cannot write {path}")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
def _mm(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v * 1e3:.{digits}f} mm"


def _deg(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f} deg"


def _num(v: float | None, fmt: str, unit: str = "") -> str:
    return "n/a" if v is None else f"{v:{fmt}}{unit}"


def _s2(v: float | None) -> str:
    return "never" if v is None else f"{v:.2f} s"


def format_summary(metrics: dict[str, Any], *, report_path: str | os.PathLike | None = None) -> str:
    """A one-screen plain-text summary of ``metrics`` (as returned by :func:`compute_metrics`)."""
    m = metrics
    n, k = m["frames"], m["frames_with_estimate"]
    pct = f"{100.0 * k / n:.1f} %" if n else "n/a"
    fails = ", ".join(f"{r} {c}" for r, c in m["failures"].items()) or "none"
    lines = [
        f"ctrnet-eval {m['bag']}  ({m['bag_duration_s']:.2f} s, {m['mode']} mode, model {m['model']})",
        f"  frames              {n} ({m['frames_evaluated']} with ground truth), with estimate {k} ({pct})",
        f"  failures            {fails}",
        f"  ADD AUC (0-100 mm)  {_num(m['add_auc'], '.2f', ' %')}   ADD mean {_mm(m['add_mean_m'])}, "
        f"median {_mm(m['add_median_m'])}",
        f"  per-frame median    translation {_mm(m['trans_err_median_m'])}, rotation {_deg(m['rot_err_median_deg'])}",
    ]
    for s in m["segments"]:
        lines.append(
            f"  fused segment {s['index']:<5} [{s['start_s']:.2f}, {s['end_s']:.2f}) s, {s['frames']} frames: "
            f"{_mm(s['fused_trans_err_m'])}, {_deg(s['fused_rot_err_deg'])} at its end; "
            f"< 2 mm for good after {_s2(s['seconds_to_2mm'])}"
            + (f"; bump detected at {', '.join(f'{b:.2f}' for b in s['bumps_detected_at_s'])} s"
               if s["bumps_detected_at_s"] else ""))
    f = m["fused"]
    lines += [
        f"  fused (worst seg.)  {_mm(f['trans_err_m'])}, {_deg(f['rot_err_deg'])}; seconds to 2 mm "
        f"{_s2(f['seconds_to_2mm'])}",
        f"  latency (estimator) median {_num(m['latency_ms']['median'], '.1f', ' ms')}, "
        f"p95 {_num(m['latency_ms']['p95'], '.1f', ' ms')} over {m['latency_frames']} frames",
        f"  reprojection        median {_num(m['reprojection_px']['median'], '.2f', ' px')}, "
        f"p95 {_num(m['reprojection_px']['p95'], '.2f', ' px')} ({m['reprojection_px']['keypoints']} keypoints used, "
        f"{m['reprojection_px']['low_confidence_keypoints']} below the confidence threshold)",
    ]
    if report_path is not None:
        lines.append(f"  report              {report_path}")
    return "\n".join(lines)


def _report_markdown(result: EvalResult, m: dict[str, Any], figures: dict[str, Path | None]) -> str:
    f = m["fused"]
    n = m["frames"]
    out = [
        f"# ctrnet-eval: {result.bag.name}",
        "",
        "Replay of a recording through the calibration node's own pipeline (`CalibrationPipeline`: joint-state "
        "interpolation, per-frame estimator, fusion), compared frame by frame with the ground truth.",
        "",
        "| input | |",
        "|---|---|",
        f"| bag | `{result.bag}` ({m['bag_duration_s']:.2f} s) |",
        f"| ground truth | `{result.groundtruth.parent_frame}` -> `{result.groundtruth.child_frame}`, "
        f"{len(result.groundtruth.segments)} segment(s) |",
        f"| model | `{result.model}` |",
        f"| robot, mode | {result.robot}, {result.mode} |",
        f"| topics | `{result.image_topic}` ({result.image_msgtype}), `{result.camera_info_topic}`, "
        f"`{result.joint_states_topic}` |",
        f"| replay time | {m['wall_s']:.1f} s |",
        "",
        "## Numbers",
        "",
        "| metric | value |",
        "|---|---|",
        f"| frames (with ground truth) | {n} ({m['frames_evaluated']}) |",
        f"| frames with an estimate | {m['frames_with_estimate']}"
        + (f" ({100.0 * m['frames_with_estimate'] / n:.1f} %)" if n else "") + " |",
        f"| failures by reason | {', '.join(f'`{r}` {c}' for r, c in m['failures'].items()) or 'none'} |",
        f"| ADD AUC, 0-100 mm | {_num(m['add_auc'], '.2f', ' %')} |",
        f"| ADD mean / median (frames with an estimate) | {_mm(m['add_mean_m'])} / {_mm(m['add_median_m'])} |",
        f"| per-frame translation error, median / p95 | {_mm(m['trans_err_median_m'])} / {_mm(m['trans_err_p95_m'])} |",
        f"| per-frame rotation error, median / p95 | {_deg(m['rot_err_median_deg'])} / {_deg(m['rot_err_p95_deg'])} |",
        f"| fused error at segment end (worst segment) | {_mm(f['trans_err_m'], 3)}, {_deg(f['rot_err_deg'])} |",
        f"| seconds until the fused error stays under 2 mm (slowest segment) | {_s2(f['seconds_to_2mm'])} |",
        f"| estimator latency, median / p95 | {_num(m['latency_ms']['median'], '.1f', ' ms')} / "
        f"{_num(m['latency_ms']['p95'], '.1f', ' ms')} |",
        f"| keypoint reprojection error, median / p95 | {_num(m['reprojection_px']['median'], '.2f', ' px')} / "
        f"{_num(m['reprojection_px']['p95'], '.2f', ' px')} |",
        "",
        "### Per ground-truth segment",
        "",
        "| segment | time [s] | frames | with estimate | per-frame median | fused at end | < 2 mm after | "
        "bumps detected [s] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in m["segments"]:
        out.append(f"| {s['index']} | {s['start_s']:.2f} - {s['end_s']:.2f} | {s['frames']} | "
                   f"{s['frames_with_estimate']} | {_mm(s['trans_err_median_m'])}, {_deg(s['rot_err_median_deg'])} | "
                   f"{_mm(s['fused_trans_err_m'], 3)}, {_deg(s['fused_rot_err_deg'])} | {_s2(s['seconds_to_2mm'])} | "
                   f"{', '.join(f'{b:.2f}' for b in s['bumps_detected_at_s']) or '-'} |")
    out += ["", "## Figures", ""]
    captions = {
        "add_auc": "**ADD accuracy curve.** Share of frames whose ADD is below each threshold; the area under "
                   "it (0-100 mm, in percent) is the ADD AUC. Frames without an estimate never count.",
        "error_over_time": "**Error over time.** Grey dots: per-frame estimates; blue line: the pose the node "
                           "would publish (fused). Dashed black: ground-truth segment boundaries (camera bumps); "
                           "dotted red: bumps the fusion detected; red ticks: frames without an estimate. "
                           "Log scale; exact zeros are drawn at the floor.",
        "reprojection": "**Keypoint reprojection error.** Distance in camera pixels between each detected keypoint "
                        "and the ground-truth projection of the same keypoint (forward kinematics at the image "
                        "stamp through the true camera pose).",
        "overlays": "**Sample frames.** Green circles: ground-truth keypoints; red x: detections (grey: below "
                    "the confidence threshold); blue +: keypoints reprojected with the fused pose at that frame.",
    }
    for key, path in figures.items():
        if path is None:
            continue
        out += [f"![{key}]({path.name})", "", captions[key], ""]
    if not any(figures.values()):
        out += ["(plots were not written: `--no-plots`)", ""]
    out += [
        "## Definitions",
        "",
        "- **Translation error** is the distance between the estimated and the true *camera position in the "
        "robot base frame*, i.e. the translation of `T_base_camera` (not of `T_camera_base`, which would mix "
        "rotation error into it). **Rotation error** is the geodesic angle between the rotations.",
        "- **ADD** is the mean distance between the robot keypoints (base frame, forward kinematics at the image "
        "stamp) transformed by the estimated and by the true `T_camera_base`; frames without an estimate count as "
        "failures in the AUC, and are left out of the ADD mean/median.",
        "- **Fused** is what the node publishes after each frame (static mode: the fused pose; moving mode: the "
        "filtered pose), evaluated at the last frame of each ground-truth segment. **Seconds to 2 mm** counts from "
        "the segment's start until the fused error drops below 2 mm and stays below to the segment's end.",
        "- **Latency** is the estimator's own time per frame (FK, letterbox, inference, PnP), over frames where "
        "the detector ran; reading and decoding the bag are not included.",
        "- Each frame is compared with the ground-truth segment its log time falls in (seconds since the first "
        "message in the bag). Frames in gaps of the ground truth count in `frames` only.",
        "",
        "Per-frame values: [`frames.csv`](frames.csv). All numbers: [`metrics.json`](metrics.json).",
        "",
    ]
    if result.warnings:
        out += ["## Warnings", ""] + [f"- {w}" for w in result.warnings] + [""]
    return "\n".join(out)


def _write_frames_csv(result: EvalResult, path: Path) -> None:
    cols = ["index", "t_rel", "stamp_ns", "segment", "ok", "reason", "latency_ms", "rmse_px", "num_inliers",
            "trans_err_m", "rot_err_deg", "add_m", "fused_trans_err_m", "fused_rot_err_deg", "source",
            "fusion_num_frames", "fusion_converged", "fusion_bumped", "fusion_segment", "fusion_trans_std_m"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for f in result.frames:
            row = []
            for c in cols:
                v = getattr(f, c)
                row.append("" if v is None else (f"{v:.9g}" if isinstance(v, float) else v))
            w.writerow(row)


def write_report(result: EvalResult, out_dir: str | os.PathLike, *, plots: bool = True) -> dict[str, Any]:
    """Write ``metrics.json``, ``frames.csv``, the figures (unless ``plots`` is False) and ``report.md``.

    Returns:
        the metrics dict (as in ``metrics.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(result)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    _write_frames_csv(result, out / "frames.csv")
    figures: dict[str, Path | None] = dict.fromkeys(FIGURES)
    if plots:
        figures["add_auc"] = plot_add_curve(result, out / FIGURES["add_auc"], auc=metrics["add_auc"])
        figures["error_over_time"] = plot_error_over_time(result, out / FIGURES["error_over_time"])
        figures["reprojection"] = plot_reprojection_histogram(result, out / FIGURES["reprojection"])
        figures["overlays"] = overlay_grid(result, out / FIGURES["overlays"])
    (out / "report.md").write_text(_report_markdown(result, metrics, figures), encoding="utf-8")
    logger.info("wrote %s", out)
    return metrics
