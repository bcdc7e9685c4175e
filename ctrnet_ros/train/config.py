"""Training configuration: one frozen dataclass with a comment per field, and named presets.

``TrainConfig`` holds everything a supervised pretraining run needs; it is stored (as a plain dict)
in every checkpoint, so a run can be resumed or exported without its command line.

Presets (:data:`PRESETS`, ``ctrnet-train pretrain --config NAME``):

``cpu_small``
    ``ctrnet_resnet18`` at width 32 (stride 16 with a dilated stage 4, 64-channel deconvolution
    head, 3.2 M parameters, 12.8 MB as ONNX) at 320x240 input, heatmap stride 4, quadratic
    sub-pixel decoding. Batch 16, 5,000 steps (80k images; about 75 min at the 15-20 images/s
    measured on this project's 2-core machines while other jobs shared them). Two settings make
    CPU training several times faster here: bf16 autocast (these Xeons have AMX; 2-3x over float32)
    and ONE torch thread plus one data-loading worker (two OpenMP threads on two shared cores
    spend most of their time waiting on each other: 3-5x slower measured). Made to be trained in
    slices: ``--resume`` continues ``last.pt`` exactly, ``--time-limit`` ends a slice cleanly.
``cpu_skip``
    ``cpu_finetune`` with ``skip_connections`` added (``--init`` a cpu_finetune checkpoint: the new
    layers start at zero), 12,000 steps, and a mask loss weighted 0.5 (was 0.2): the mask's outline is
    what the silhouette refinement of the fused pose fits.
``gpu``
    ``ctrnet_resnet18`` (width 64, dilated stride 16, 128-channel head), batch 64, AMP, 30,000 steps.
    Use ``--arch ctrnet_resnet50`` for the paper's trunk.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["AugmentConfig", "TrainConfig", "PRESETS", "get_preset", "config_to_dict", "config_from_dict"]


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time image augmentation; every draw is seeded by (seed, epoch, frame index)."""

    geometric_prob: float = 0.8  # probability of a random zoom/translate crop (else the plain letterbox)
    scale_range: tuple[float, float] = (0.8, 1.3)  # zoom factor of the crop (>1 magnifies), log-uniform
    translate_frac: float = 0.12  # max shift of the crop centre, as a fraction of the input width/height
    brightness: float = 0.3  # brightness factor drawn from [1 - b, 1 + b]
    contrast: float = 0.3  # contrast factor drawn from [1 - c, 1 + c] (blend with the mean grey)
    saturation: float = 0.3  # saturation factor drawn from [1 - s, 1 + s] (blend with the greyscale image)
    hue: float = 0.03  # hue shift drawn from [-h, h], in turns (1.0 = 360 degrees)
    blur_prob: float = 0.2  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.3, 1.2)  # its standard deviation range, input pixels
    noise_prob: float = 0.3  # probability of additive Gaussian pixel noise
    noise_std: tuple[float, float] = (0.005, 0.03)  # its standard deviation range, in [0, 1] intensity units
    jpeg_prob: float = 0.3  # probability of a JPEG round trip
    jpeg_quality: tuple[int, int] = (40, 95)  # its quality range
    # Camera-pipeline effects (off by default; drawn after the ones above, so enabling them does not
    # reshuffle the older draws):
    white_balance: float = 0.0  # per-channel gains drawn from [1 - w, 1 + w] (light colour / white-balance error)
    gamma: tuple[float, float] = (1.0, 1.0)  # output gamma, log-uniform in this range
    motion_blur_prob: float = 0.0  # probability of a linear motion blur (centred kernel, so labels stay valid)
    motion_blur_px: tuple[float, float] = (2.0, 8.0)  # its length range, input pixels

    def __post_init__(self):
        for name in ("scale_range", "blur_sigma", "noise_std", "jpeg_quality", "gamma", "motion_blur_px"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or value[0] > value[1]:
                raise ValueError(f"augment.{name} must be a (low, high) pair, got {value!r}")
            object.__setattr__(self, name, value)
        if self.scale_range[0] <= 0:
            raise ValueError(f"augment.scale_range must be positive, got {self.scale_range}")
        if self.gamma[0] <= 0:
            raise ValueError(f"augment.gamma must be positive, got {self.gamma}")
        if not 0.0 <= self.white_balance < 1.0:
            raise ValueError(f"augment.white_balance must be in [0, 1), got {self.white_balance}")
        for name in ("geometric_prob", "blur_prob", "noise_prob", "jpeg_prob", "motion_blur_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} must be a probability, got {getattr(self, name)}")

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all (validation, tests)."""
        return cls(geometric_prob=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, blur_prob=0.0,
                   noise_prob=0.0, jpeg_prob=0.0, white_balance=0.0, gamma=(1.0, 1.0), motion_blur_prob=0.0)

    @classmethod
    def camera(cls) -> "AugmentConfig":
        """Stronger camera-pipeline variation (white balance, gamma, motion blur, low JPEG quality).

        Generic robustness to the camera, not a copy of any sim preset; used by the ``cpu_finetune``
        preset.
        """
        return cls(brightness=0.4, contrast=0.35, saturation=0.4, hue=0.04, blur_prob=0.3, blur_sigma=(0.3, 1.5),
                   noise_prob=0.4, noise_std=(0.005, 0.04), jpeg_prob=0.4, jpeg_quality=(25, 95),
                   white_balance=0.15, gamma=(0.75, 1.35), motion_blur_prob=0.25, motion_blur_px=(2.0, 7.0))


@dataclass(frozen=True)
class TrainConfig:
    """Supervised pretraining on ``ctrnet-sim`` datasets (see :mod:`ctrnet_ros.train.pretrain`)."""

    preset: str = "custom"  # name of the preset this config started from (for the model card)
    # --- model ---
    arch: str = "ctrnet_slim"  # registry name (ctrnet_ros.net.registry.model_registry)
    model: Mapping[str, Any] = field(default_factory=dict)  # overrides of the arch's config dataclass fields
    input_size: tuple[int, int] = (320, 240)  # network input (W, H); camera images are letterboxed into it
    decode_method: str = "quadratic"  # heatmap decoding stored with the model (quadratic: sub-pixel log-parabola)
    init: str | None = None  # warm start from this checkpoint's weights (same arch and model config); fresh optimizer and LR schedule
    # --- data ---
    data: tuple[str, ...] = ()  # training dataset directories (ctrnet-sim dataset), concatenated
    val: str | None = None  # validation dataset directory (any camera resolution), or None
    val_max_frames: int = 300  # validate on at most this many frames (the first ones), 0 = all
    allow_incomplete: bool = False  # train on the finished shards of a dataset still being written
    # --- optimisation ---
    batch_size: int = 16  # images per step
    lr: float = 2e-3  # peak learning rate (AdamW)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay (not applied to norms and biases)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    grad_clip: float = 5.0  # clip the global gradient norm to this (0 = off)
    steps: int = 2000  # optimiser steps in the whole run (epochs is used instead when > 0)
    epochs: float = 0.0  # if > 0: run ceil(epochs * frames / batch_size) steps instead of ``steps``
    warmup_steps: int = 100  # linear LR warm-up from 0
    min_lr_ratio: float = 0.02  # cosine decay ends at lr * min_lr_ratio
    # --- targets and losses ---
    heatmap_sigma: float = 1.5  # Gaussian target std, heatmap cells (x heatmap stride = input px)
    heatmap_loss: str = "bce"  # "bce" (logit models: weighted BCE vs Gaussian targets) or "mse" (probabilities)
    heatmap_pos_weight: float = 20.0  # BCE cell weight 1 + w * target: emphasises peaks, keeps the optimum p = target
    occluded_weight: float = 1.0  # weight of keypoints inside the image but occluded (1: learn them from context)
    w_heatmap: float = 1.0  # weight of the heatmap loss
    w_mask: float = 0.2  # weight of the mask loss (0 or no mask head: off)
    w_dice: float = 0.5  # weight of the soft-Dice term inside the mask loss, relative to its BCE
    w_coord: float = 0.02  # weight of the L1 on decoded sub-pixel keypoints (input px); 0 = off
    coord_start_step: int = 300  # enable the coordinate loss from this step (once peaks are in place)
    coord_max_px: float = 8.0  # per-keypoint coordinate error is clipped here (wrong-peak errors carry no gradient)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # augmentation strengths
    # --- runtime ---
    seed: int = 0  # seeds weights, data order and augmentation; fixed seed + CPU = bit-identical runs
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling)
    cpu_bf16: bool = False  # bf16 autocast on CPU (a large speed-up only on CPUs with AMX / avx512_bf16)
    threads: int = 0  # torch.set_num_threads (0: leave torch's default)
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    out_dir: str = "runs/cpu_small"  # run directory: last.pt, best.pt, log.csv, curves.png, config.json
    checkpoint_every: int = 100  # write last.pt every N steps (and at the end, and on Ctrl-C)
    val_every: int = 250  # validate (and maybe write best.pt) every N steps and at the end; 0 = each epoch
    log_every: int = 10  # average the losses over N steps per CSV row
    time_limit_min: float = 0.0  # stop this slice cleanly (last.pt written) after N minutes; 0 = no limit

    def __post_init__(self):
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "model", dict(self.model))
        if isinstance(self.augment, Mapping):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))
        if len(self.input_size) != 2 or min(self.input_size) <= 0:
            raise ValueError(f"input_size must be (W, H) > 0, got {self.input_size}")
        if self.heatmap_loss not in ("bce", "mse"):
            raise ValueError(f"heatmap_loss must be 'bce' or 'mse', got {self.heatmap_loss!r}")
        if self.batch_size < 1 or self.steps < 1 and self.epochs <= 0:
            raise ValueError("batch_size must be >= 1 and steps >= 1 (or epochs > 0)")
        if self.heatmap_sigma <= 0:
            raise ValueError(f"heatmap_sigma must be > 0, got {self.heatmap_sigma}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def total_steps(self, num_frames: int) -> int:
        """Steps of the whole run for a training set of ``num_frames`` frames."""
        if self.epochs > 0:
            return max(1, -(-int(self.epochs * num_frames) // self.batch_size))
        return int(self.steps)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, TrainConfig] = {
    "cpu_small": TrainConfig(
        preset="cpu_small", arch="ctrnet_resnet18", model=dict(trunk_width=32, head_channels=64, mask_channels=32),
        input_size=(320, 240), batch_size=16, lr=2e-3, steps=5000, warmup_steps=150, coord_start_step=500,
        cpu_bf16=True, threads=1, num_workers=1, out_dir="runs/cpu_small", checkpoint_every=100, val_every=500,
        val_max_frames=300,
    ),
    # Continue a finished cpu_small run (--init its last.pt) with a second, lower cosine cycle and the
    # stronger camera augmentation: the way to keep improving a model across CPU sessions.
    "cpu_finetune": TrainConfig(
        preset="cpu_finetune", arch="ctrnet_resnet18", model=dict(trunk_width=32, head_channels=64, mask_channels=32),
        input_size=(320, 240), batch_size=16, lr=6e-4, steps=6000, warmup_steps=100, coord_start_step=0,
        augment=AugmentConfig.camera(), cpu_bf16=True, threads=1, num_workers=1, out_dir="runs/cpu_finetune",
        checkpoint_every=100, val_every=1000, val_max_frames=300,
    ),
    # Continue a cpu_finetune model with skip connections added (zero-initialised, so step 0 is the
    # warm-start model exactly): the stride-4/8 trunk stages sharpen the peaks and the mask edge.
    "cpu_skip": TrainConfig(
        preset="cpu_skip", arch="ctrnet_resnet18",
        model=dict(trunk_width=32, head_channels=64, mask_channels=32, skip_connections=True),
        input_size=(320, 240), batch_size=16, lr=6e-4, steps=12000, warmup_steps=200, coord_start_step=0, w_mask=0.5,
        augment=AugmentConfig.camera(), cpu_bf16=True, threads=1, num_workers=1, out_dir="runs/cpu_skip",
        checkpoint_every=100, val_every=1000, val_max_frames=300,
    ),
    "gpu": TrainConfig(
        preset="gpu", arch="ctrnet_resnet18", model={}, input_size=(320, 240), batch_size=64, lr=2e-3,
        steps=30000, warmup_steps=1000, coord_start_step=2000, amp=True, num_workers=8, out_dir="runs/gpu",
        checkpoint_every=1000, val_every=2000, val_max_frames=500, log_every=50,
    ),
}


def get_preset(name: str) -> TrainConfig:
    """A preset by name; raises ValueError listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain dict (lists for tuples, so checkpoints and JSON hold it)."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def config_from_dict(d: Mapping[str, Any]) -> TrainConfig:
    """Inverse of :func:`config_to_dict`; unknown keys raise ValueError (a newer/older config)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}")
    d = dict(d)
    if "augment" in d and isinstance(d["augment"], Mapping):
        d["augment"] = AugmentConfig(**d["augment"])
    return TrainConfig(**d)
