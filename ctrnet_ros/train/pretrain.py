"""Supervised pretraining of a keypoint + mask network on ``ctrnet-sim`` datasets.

:func:`pretrain` runs (or resumes) one training run in ``config.out_dir``:

==============  ================================================================================
file            content
==============  ================================================================================
config.json     the :class:`~ctrnet_ros.train.config.TrainConfig` of the run
last.pt         latest state: weights, optimizer, step, RNG, timing (resume from here)
best.pt         weights with the best validation score (ADD AUC, then PCK@5); no optimizer state
log.csv         one row per ``log_every`` steps (losses, LR, images/s) and per validation (metrics)
curves.png      learning curves: training losses and validation metrics against the step
==============  ================================================================================

Checkpoints are written by :func:`~ctrnet_ros.net.registry.save_checkpoint` and hold only plain
data, so :func:`~ctrnet_ros.net.registry.load_checkpoint` (``weights_only=True``) reads them and
:func:`~ctrnet_ros.inference.load_detector` runs them (``keypoint_names`` and ``input_size`` are
among their entries).

Resuming is exact: the learning rate is a pure function of the step, the batch of a step is a
pure function of (seed, step) (:class:`~ctrnet_ros.train.data.StepBatchSampler`), and the weights,
AdamW moments, grad-scaler and torch RNG state come back from ``last.pt``. On CPU with a fixed
seed and thread count an interrupted-and-resumed run reproduces an uninterrupted one bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..core.camera import ImageTransform, PinholeCamera
from ..core.estimator import EstimatorConfig
from ..net.ctrnet import CtRNetConfig
from ..net.keypoint_net import KeypointNet
from ..net.registry import build_model, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_from_dict, config_to_dict
from .data import KeypointTrainDataset, StepBatchSampler, dataset_summary, open_datasets
from .losses import model_losses
from .metrics import METRIC_NAMES, KeypointMetrics, pose_from_keypoints
from .runlog import append_log, log_series, read_log, write_log

__all__ = ["pretrain", "evaluate", "lr_at", "resolve_device", "cpu_has_bf16", "hardware_description",
           "RESUMABLE_OVERRIDES", "RESUME_STATE_KEYS", "without_resume_state", "TrainingError"]

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "epoch", "lr", "loss", "heatmap", "mask", "coord", "images_per_s", "train_s") + tuple(
    f"val_{m}" for m in METRIC_NAMES) + ("val_loss",)

#: TrainConfig fields that may change when a run is resumed (where it runs, not what it learns).
RESUMABLE_OVERRIDES = ("device", "threads", "num_workers", "time_limit_min", "checkpoint_every", "log_every",
                       "val_every", "val_max_frames", "allow_incomplete", "data", "val", "out_dir", "steps",
                       "epochs")


class TrainingError(RuntimeError):
    """Training cannot start or continue (bad data, diverged loss, incompatible resume)."""


# --- small pieces --------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available else cpu; anything else as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available")
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


#: checkpoint entries that only resume a run (optimizer, AMP scaler, RNG states), not part of the model
RESUME_STATE_KEYS = ("optimizer", "grad_scaler", "rng")


def without_resume_state(extra: dict) -> dict:
    """A checkpoint's extra data without :data:`RESUME_STATE_KEYS` (for a weights-only copy)."""
    return {k: v for k, v in extra.items() if k not in RESUME_STATE_KEYS}


def hardware_description(device: torch.device) -> str:
    """One line naming the hardware a run trains on, for checkpoints and model cards."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    model = platform.processor() or "CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {torch.get_num_threads()} torch threads ({os.cpu_count()} CPUs visible)"


def lr_at(step: int, config: TrainConfig, total_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then cosine to ``min_lr_ratio``."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only, not on norms and biases (nanoGPT's split)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type == "cuda" and config.amp:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and config.cpu_bf16:
        if cpu_has_bf16():
            return torch.bfloat16
        logger.info("cpu_bf16 requested but this CPU has no native bf16 units; training in float32")
    return None


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers only decode and augment; leave the cores to the training process


def _loader(dataset, sampler, config: TrainConfig, device: torch.device):
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=config.num_workers, pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if config.num_workers > 0 else None,
        prefetch_factor=4 if config.num_workers > 0 else None)


# --- validation ------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: KeypointTrainDataset, *, device: torch.device, batch_size: int = 16,
             decode_method: str = "quadratic", config: TrainConfig | None = None,
             estimator_config: EstimatorConfig = EstimatorConfig(), progress: bool = False) -> dict[str, float]:
    """Validation metrics (:mod:`ctrnet_ros.train.metrics`) of ``model`` on ``dataset`` (no augmentation).

    Runs in float32 and eval mode (the previous mode is restored). Keypoints are decoded with
    ``decode_method``, mapped back to camera pixels through each sample's letterbox, and solved
    with PnP as the estimator does. ``val_loss`` (the training loss without the coordinate term)
    is included when ``config`` is given.
    """
    was_training = model.training
    net = KeypointNet(model, decode_method=decode_method).eval()
    metrics = KeypointMetrics()
    losses = []
    w, h = dataset.input_size
    keys = list(range(len(dataset)))
    raw: dict[str, Any] = {}
    hook = model.register_forward_hook(lambda _m, _i, output: raw.update(output))  # the net's raw outputs
    try:
        for start in tqdm(range(0, len(keys), batch_size), desc="validate", leave=False, disable=not progress):
            batch = torch.utils.data.default_collate([dataset[k] for k in keys[start:start + batch_size]])
            image = batch["image"].to(device)
            out = net(image)
            if config is not None:
                batch_losses = model_losses(model, raw, _to_device(batch, device), config, use_coord=False)
                losses.append(float(batch_losses["loss"]))
            kp = out["keypoints"].double().cpu().numpy()  # (B, K, 2) input px
            conf = out["confidence"].double().cpu().numpy()
            mask = out["mask"][:, 0].float().cpu().numpy() if net.has_mask else None
            for i in range(len(kp)):
                a_x, b_x, a_y, b_y = batch["transform"][i].tolist()
                tf = ImageTransform(a_x=a_x, b_x=b_x, a_y=a_y, b_y=b_y, out_width=w, out_height=h)
                cam_w, cam_h = batch["camera_size"][i].tolist()
                camera = PinholeCamera(K=batch["K"][i].numpy(), D=np.zeros(5), width=cam_w, height=cam_h)
                uv = tf.invert_coords(kp[i])
                base = batch["keypoints_base"][i].numpy()
                cv2.setRNGSeed(start + i)  # RANSAC uses OpenCV's global RNG; as ctrnet-train validate does
                T = pose_from_keypoints(uv, conf[i], base, camera, estimator_config)
                metrics.update(pred_uv=uv, gt_uv=batch["uv_camera"][i].numpy(),
                               gt_valid=batch["in_image_camera"][i].numpy(), T_est=T,
                               T_gt=batch["T_camera_base"][i].numpy(), keypoints_base=base,
                               mask_pred=None if mask is None else mask[i], mask_gt=batch["mask"][i, 0].numpy())
    finally:
        hook.remove()
        model.train(was_training)
    result = metrics.compute()
    result["loss"] = float(np.mean(losses)) if losses else float("nan")
    return result


def _score(metrics: dict[str, float]) -> tuple[float, float]:
    """Higher is better: (ADD AUC, PCK@5), NaN as -inf."""
    def f(v):
        return -math.inf if v is None or not math.isfinite(v) else float(v)

    return f(metrics.get("add_auc")), f(metrics.get("pck5"))


# --- logs ------------------------------------------------------------------------------------

def plot_curves(log_path: Path, png_path: Path, *, title: str = "") -> None:
    """Learning curves from ``log.csv``: training losses (log scale) and validation metrics."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_log(log_path)
    if not rows:
        return

    fig = Figure(figsize=(12, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_pct, ax_px = fig.add_subplot(1, 3, 1), fig.add_subplot(1, 3, 2), fig.add_subplot(1, 3, 3)
    for key in ("loss", "heatmap", "mask", "coord", "val_loss"):
        x, y = log_series(rows, key)
        if x and any(v > 0 for v in y):
            ax_loss.plot(x, y, label=key, marker="o" if key == "val_loss" else None, ms=3)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("losses")
    if ax_loss.get_legend_handles_labels()[0]:
        ax_loss.legend(fontsize=8)
    for key, label in (("val_pck2", "PCK@2px"), ("val_pck5", "PCK@5px"), ("val_pck10", "PCK@10px"),
                       ("val_add_auc", "ADD AUC (0-100 mm)"), ("val_mask_iou", "mask IoU x100")):
        x, y = log_series(rows, key)
        if x:
            ax_pct.plot(x, [v * 100 if key == "val_mask_iou" else v for v in y], marker="o", ms=3, label=label)
    ax_pct.set_ylim(0, 100)
    ax_pct.set_xlabel("step")
    ax_pct.set_title("validation (%)")
    if ax_pct.get_legend_handles_labels()[0]:
        ax_pct.legend(fontsize=8)
    for key, label in (("val_median_px", "median keypoint error (px)"), ("val_add_median_mm", "median ADD (mm)")):
        x, y = log_series(rows, key)
        if x:
            ax_px.plot(x, y, marker="o", ms=3, label=label)
    ax_px.set_yscale("log")
    ax_px.set_xlabel("step")
    ax_px.set_title("validation errors (camera resolution)")
    if ax_px.get_legend_handles_labels()[0]:
        ax_px.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path)


# --- the run ---------------------------------------------------------------------------------

def _resume_config(config: TrainConfig, stored: dict, explicit: set[str]) -> TrainConfig:
    """The stored config, with the fields in ``explicit`` (given on this command line) taken from ``config``."""
    base = config_from_dict(stored)
    changes = {k: getattr(config, k) for k in explicit if k in RESUMABLE_OVERRIDES}
    refused = sorted(k for k in explicit if k not in RESUMABLE_OVERRIDES and getattr(config, k) != getattr(base, k))
    if refused:
        raise TrainingError(f"cannot change {refused} when resuming (they define what is learned); start a new run "
                            f"in another --out directory instead")
    if any(k in changes and changes[k] != getattr(base, k) for k in ("steps", "epochs")):
        logger.warning("changing the run length on resume changes the cosine LR schedule from here on")
    return base.replace(**changes)


def _warm_start(model: torch.nn.Module, model_config, config: TrainConfig, keypoint_names: list[str]) -> dict:
    """Load ``config.init``'s weights into the freshly built ``model``; returns its provenance for the card.

    Only the weights come over: the optimizer, LR schedule and step start afresh. The checkpoint
    must be of the same architecture, model config and keypoints, else TrainingError.
    """
    init_model, init_config, init_extra = load_checkpoint(config.init)  # ModelFileError: clear message
    arch = (init_extra.get("train_config") or {}).get("arch") or getattr(init_model, "arch", None)
    if arch is not None and arch != config.arch:
        raise TrainingError(f"--init {config.init} is a {arch} model, this run trains {config.arch}")
    # The one change allowed: adding skip connections (their layers start at zero, see CtRNetModel).
    adds_skips = (isinstance(init_config, CtRNetConfig) and isinstance(model_config, CtRNetConfig)
                  and not init_config.skip_connections and model_config.skip_connections
                  and dataclasses.replace(init_config, skip_connections=True) == model_config)
    if init_config != model_config and not adds_skips:
        raise TrainingError(f"--init {config.init} has model config {init_config}, this run builds {model_config}; "
                            f"pass the same --model overrides (adding skip_connections is the one change allowed)")
    if list(init_extra.get("keypoint_names", [])) != list(keypoint_names):
        raise TrainingError(f"--init {config.init} was trained on keypoints {init_extra.get('keypoint_names')}, "
                            f"the data has {keypoint_names}")
    if adds_skips:
        fresh = model.load_warm_start(init_model.state_dict())
        logger.info("warm start adds skip connections: %d new parameter tensors start at zero", len(fresh))
    else:
        model.load_state_dict(init_model.state_dict(), strict=True)
    logger.info("warm start from %s (step %s, %.1f min of training)", config.init, init_extra.get("step"),
                float(init_extra.get("train_seconds", 0.0)) / 60)
    info = {key: init_extra.get(key) for key in ("step", "images_seen", "train_seconds", "hardware", "data")}
    info["checkpoint"] = str(config.init)
    info["preset"] = (init_extra.get("train_config") or {}).get("preset")
    if init_extra.get("init_from") is not None:  # a chain of warm starts
        info["init_from"] = init_extra["init_from"]
    return info


def pretrain(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None,
             explicit_fields: set[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a run; see the module docstring for what it writes.

    Args:
        config: the run's config. With ``resume`` and an existing ``last.pt`` the stored config is
            used instead, except for ``explicit_fields`` among :data:`RESUMABLE_OVERRIDES`.
        resume: continue from ``<out_dir>/last.pt`` if it exists (else start fresh).
        stop_after: end this slice after this many steps (``last.pt`` written), e.g. to train in parts.
        explicit_fields: TrainConfig fields set explicitly by the caller (for ``resume``).
        progress: show a tqdm bar.

    Returns:
        ``dict(step, total_steps, stopped_early, last, best, val_metrics, best_metrics, train_seconds)``.
    """
    out = Path(config.out_dir)
    last_path, best_path = out / "last.pt", out / "best.pt"
    log_path, png_path = out / "log.csv", out / "curves.png"
    resume_state = None
    if resume and last_path.is_file():
        model, model_config, extra = load_checkpoint(last_path)  # raises ModelFileError (clear message)
        if "train_config" not in extra or "optimizer" not in extra:
            raise TrainingError(f"{last_path} is not a training checkpoint (no optimizer state); cannot resume")
        config = _resume_config(config, extra["train_config"], explicit_fields or set())
        out = Path(config.out_dir)
        last_path, best_path = out / "last.pt", out / "best.pt"
        log_path, png_path = out / "log.csv", out / "curves.png"
        resume_state = (model, model_config, extra)
    elif resume:
        logger.info("no %s yet: starting a new run", last_path)
    out.mkdir(parents=True, exist_ok=True)

    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_sets = open_datasets(config.data, allow_incomplete=config.allow_incomplete)
    keypoint_names = train_sets[0].keypoint_names
    robot = train_sets[0].spec.robot

    torch.manual_seed(config.seed)
    if resume_state is None:
        try:
            model, model_config = build_model(config.arch, num_keypoints=len(keypoint_names),
                                              input_size=config.input_size, **config.model)
        except (ValueError, TypeError) as exc:
            raise TrainingError(f"cannot build {config.arch} with overrides {dict(config.model)}: {exc}") from exc
        init_from = _warm_start(model, model_config, config, keypoint_names) if config.init else None
        start_step, train_seconds, best = 0, 0.0, (-math.inf, -math.inf)
        best_metrics: dict[str, float] = {}
        val_metrics: dict[str, float] = {}
    else:
        model, model_config, extra = resume_state
        init_from = extra.get("init_from")
        if list(extra.get("keypoint_names", [])) != keypoint_names:
            raise TrainingError(f"{last_path} was trained on keypoints {extra.get('keypoint_names')}, the data has "
                                f"{keypoint_names}")
        start_step = int(extra["step"])
        train_seconds = float(extra.get("train_seconds", 0.0))
        best_metrics = dict(extra.get("best_metrics", {}))
        val_metrics = dict(extra.get("val_metrics", {}))
        best = _score(best_metrics) if best_metrics else (-math.inf, -math.inf)
    model.to(device).train()
    heatmap_stride = int(model.heatmap_stride)

    train_ds = KeypointTrainDataset(train_sets, input_size=config.input_size, heatmap_stride=heatmap_stride,
                                    sigma=config.heatmap_sigma, augment=config.augment, seed=config.seed,
                                    occluded_weight=config.occluded_weight)
    val_ds = None
    if config.val:
        val_sets = open_datasets([config.val])
        if val_sets[0].keypoint_names != keypoint_names:
            raise TrainingError(f"validation set {config.val} has keypoints {val_sets[0].keypoint_names}, "
                                f"training data has {keypoint_names}")
        val_ds = KeypointTrainDataset(val_sets, input_size=config.input_size, heatmap_stride=heatmap_stride,
                                      sigma=config.heatmap_sigma, augment=None, max_frames=config.val_max_frames,
                                      occluded_weight=config.occluded_weight)
    num_frames = len(train_ds)
    total = config.total_steps(num_frames)
    steps_per_epoch = max(1, math.ceil(num_frames / config.batch_size))
    val_every = config.val_every if config.val_every > 0 else steps_per_epoch
    data_summary = [dataset_summary(d) for d in train_sets]
    val_summary = dataset_summary(val_ds.datasets[0]) if val_ds is not None else None

    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas)
    amp_dtype = _autocast_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype == torch.float16)
    if resume_state is not None:
        extra = resume_state[2]
        optimizer.load_state_dict(extra["optimizer"])
        if extra.get("grad_scaler") and scaler.is_enabled():
            scaler.load_state_dict(extra["grad_scaler"])
        rng = extra.get("rng", {})
        if isinstance(rng.get("torch"), torch.Tensor):
            torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda"):
            torch.cuda.set_rng_state_all(rng["cuda"])
        write_log(log_path, LOG_COLUMNS, read_log(log_path, up_to_step=start_step))  # drop rows past the checkpoint
        logger.info("resumed %s at step %d of %d", last_path, start_step, total)
    else:
        if log_path.exists():
            log_path.unlink()
    (out / "config.json").write_text(json.dumps(config_to_dict(config), indent=2) + "\n", encoding="utf-8")

    hardware = hardware_description(device)
    logger.info("training %s (%.2fM parameters) on %d frames, %d steps of batch %d, on %s%s", config.arch,
                sum(p.numel() for p in model.parameters()) / 1e6, num_frames, total, config.batch_size, hardware,
                f", autocast {amp_dtype}" if amp_dtype else "")

    def checkpoint_extra(step: int, *, with_optimizer: bool) -> dict[str, Any]:
        extra = {
            "keypoint_names": keypoint_names, "input_size": list(config.input_size),
            "decode_method": config.decode_method, "robot": robot,
            "step": step, "total_steps": total, "epoch": step * config.batch_size / num_frames,
            "images_seen": step * config.batch_size, "train_seconds": train_seconds,
            "train_config": config_to_dict(config), "hardware": hardware, "torch_version": str(torch.__version__),
            "data": data_summary, "val_data": val_summary,
            "val_metrics": val_metrics, "best_metrics": best_metrics,
        }
        if init_from is not None:
            extra["init_from"] = init_from
        if with_optimizer:
            extra["optimizer"] = optimizer.state_dict()
            extra["grad_scaler"] = scaler.state_dict() if scaler.is_enabled() else {}
            extra["rng"] = {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []}
        return extra

    def save_last(step: int) -> None:
        save_checkpoint(last_path, model, model_config, checkpoint_extra(step, with_optimizer=True), arch=config.arch)

    step = start_step
    end = total if stop_after is None else min(total, start_step + int(stop_after))
    sampler = StepBatchSampler(num_frames, config.batch_size, seed=config.seed, start_step=start_step, end_step=end)
    loader = _loader(train_ds, sampler, config, device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    sums = {"loss": 0.0, "heatmap": 0.0, "mask": 0.0, "coord": 0.0}
    n_acc, interval_images, interval_time = 0, 0, 0.0
    slice_start = time.perf_counter()
    stopped_early = False
    bar = tqdm(total=total, initial=start_step, desc=f"pretrain {config.arch}", unit="step", disable=not progress,
               dynamic_ncols=True)
    try:
        t_last = time.perf_counter()
        for batch in loader:
            lr = lr_at(step, config, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = _to_device(batch, device)
            with autocast():
                out_ = model(batch["image"])
            losses = model_losses(model, out_, batch, config, use_coord=step >= config.coord_start_step)
            if not torch.isfinite(losses["loss"]):
                raise TrainingError(f"loss became {losses['loss'].item()} at step {step} "
                                    f"(heatmap {losses['heatmap'].item()}, mask {losses['mask'].item()}, "
                                    f"coord {losses['coord'].item()}); lower lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            if config.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            now = time.perf_counter()
            train_seconds += now - t_last
            interval_time += now - t_last
            interval_images += int(batch["image"].shape[0])
            for k in sums:
                sums[k] += float(losses[k].detach())
            n_acc += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(losses['loss'].detach()):.4f}", lr=f"{lr:.2e}")

            if step % config.log_every == 0 or step == end:
                row = {"step": step, "epoch": step * config.batch_size / num_frames, "lr": lr,
                       **{k: v / n_acc for k, v in sums.items()},
                       "images_per_s": interval_images / max(interval_time, 1e-9), "train_s": train_seconds}
                append_log(log_path, row, LOG_COLUMNS)
                sums = dict.fromkeys(sums, 0.0)
                n_acc, interval_images, interval_time = 0, 0, 0.0
            if val_ds is not None and (step % val_every == 0 or step == total):
                val_metrics = evaluate(model, val_ds, device=device, batch_size=config.batch_size,
                                       decode_method=config.decode_method, config=config)
                append_log(log_path, {"step": step, "epoch": step * config.batch_size / num_frames, "lr": lr,
                                       "train_s": train_seconds, "val_loss": val_metrics["loss"],
                                       **{f"val_{m}": val_metrics[m] for m in METRIC_NAMES}}, LOG_COLUMNS)
                logger.info("step %d: PCK@2/5/10 %.1f/%.1f/%.1f %%, median %.2f px, mask IoU %.3f, ADD AUC %.1f, "
                            "pose ok %.0f %%", step, val_metrics["pck2"], val_metrics["pck5"], val_metrics["pck10"],
                            val_metrics["median_px"], val_metrics["mask_iou"], val_metrics["add_auc"],
                            val_metrics["pose_success"])
                if _score(val_metrics) > best:
                    best, best_metrics = _score(val_metrics), {**val_metrics, "step": float(step)}
                    save_checkpoint(best_path, model, model_config, checkpoint_extra(step, with_optimizer=False),
                                    arch=config.arch)
                plot_curves(log_path, png_path, title=f"{config.arch} ({config.preset}) {out}")
            t_last = time.perf_counter()  # validation time is not training time
            if step % config.checkpoint_every == 0 and step < end:
                save_last(step)
            if config.time_limit_min > 0 and (time.perf_counter() - slice_start) > 60.0 * config.time_limit_min:
                logger.info("time limit of %.1f min reached at step %d; resume with --resume", config.time_limit_min,
                            step)
                stopped_early = True
                break
    except KeyboardInterrupt:
        logger.warning("interrupted at step %d: writing %s (resume with --resume)", step, last_path)
        save_last(step)
        raise
    finally:
        bar.close()
    save_last(step)
    if val_ds is None:  # without validation the last weights are the best we know of
        save_checkpoint(best_path, model, model_config, checkpoint_extra(step, with_optimizer=False), arch=config.arch)
    plot_curves(log_path, png_path, title=f"{config.arch} ({config.preset}) {out}")
    stopped_early = stopped_early or step < total
    return {"step": step, "total_steps": total, "stopped_early": stopped_early, "last": str(last_path),
            "best": str(best_path), "val_metrics": val_metrics, "best_metrics": best_metrics,
            "train_seconds": train_seconds, "log": str(log_path), "curves": str(png_path)}
