"""Self-supervised refresh (CtRNet's second stage): adapt a pretrained model to a camera without labels.

For each unlabeled image collected on the target camera (``ctrnet-collect`` / ``collector_node``),
with the joint positions at its stamp:

1. the network predicts keypoints ``u`` (sub-pixel, differentiable decoding) and a robot mask ``M``;
2. forward kinematics gives the keypoints in the base frame ``X``;
3. :func:`~ctrnet_ros.train.bpnp.differentiable_pnp` gives ``T_camera_base`` (robust OpenCV solve
   forward, implicit-function gradient backward);
4. :class:`~ctrnet_ros.train.silhouette.SilhouetteRenderer` renders the robot's soft silhouette
   ``S(T)`` from its URDF meshes at the joint positions;
5. losses (CtRNet, Lu et al. 2023):

   * ``silhouette``: ``w_b * mean((S(T) - M.detach())^2)`` teaches the *keypoints*: the only way
     to lower it is to move ``u`` so that PnP's pose renders a robot that matches the mask;
   * ``mask_refine``: ``w_b * BCE(M, S(T).detach())`` refines the *segmentation* with the rendered
     silhouette as a pseudo-label,

   each sample weighted by ``w_b = exp(-rmse_b / rmse_scale_px)``, the reprojection RMSE of its PnP
   solve (a sample whose keypoints do not fit the robot's geometry teaches little), and zero when
   PnP failed or the RMSE exceeds ``max_rmse_px``.

Two guards keep the loop from chasing itself (measured on a shifted-preset cell, see
``docs/results/refresh_experiment.md``):

* ``adapt_bn`` (default): before any gradient step, every BatchNorm layer's statistics are
  re-estimated on the collected images (AdaBN, Li et al. 2016). Alone this is the larger part of the
  gain; the gradient steps then run with BatchNorm frozen (``freeze_bn``).
* ``mask_target="teacher"`` (default): the silhouette must match the mask of the frozen initial model
  (BatchNorm adapted), not the mask of the network being trained. With the student's own mask as the
  target, keypoints and mask drifted together until the mask was empty (render/mask IoU 0.5 -> 0.0).

Outputs in ``out_dir``: ``config.json``, ``last.pt`` (resumable), ``refreshed.pt`` (the result,
loadable by :func:`~ctrnet_ros.inference.load_detector` and ``ctrnet-export``), ``log.csv`` and
``curves.png`` (loss curves). With ``val`` (a labelled ``ctrnet-sim`` dataset, for experiments
only) the usual validation metrics are logged too; they never influence training.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..core.camera import PinholeCamera
from ..core.pnp import PnPConfig
from ..core.robot import KeypointSpec, RobotModel
from ..net.decode import decode_heatmaps, heatmap_to_input_coords, local_soft_argmax
from ..net.registry import ModelFileError, load_checkpoint, save_checkpoint
from .bpnp import differentiable_pnp
from .config import AugmentConfig
from .data import photometric_augment
from .metrics import mask_iou
from .pretrain import hardware_description, resolve_device, without_resume_state
from .runlog import append_log, log_series, read_log, write_log

__all__ = ["RefreshConfig", "RefreshError", "refresh", "CollectionImages", "plot_refresh_curves",
           "self_supervised_losses", "SelfSupervisedTerms"]

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "lr", "loss", "silhouette", "mask_refine", "pose_ok", "rmse_px", "weight", "iou",
               "images_per_s", "train_s", "val_pck5", "val_median_px", "val_mask_iou", "val_add_auc")


class RefreshError(RuntimeError):
    """The refresh cannot run (bad data, model or configuration); the message says why."""


@dataclass(frozen=True)
class RefreshConfig:
    data: str = ""  # collection directory written by ctrnet-collect / collector_node
    init: str = ""  # pretrained checkpoint (.pt written by ctrnet-train)
    out_dir: str = "runs/refresh"  # run directory
    robot: str = ""  # keypoint spec name (KeypointSpec.builtin); default: the checkpoint's robot
    steps: int = 600  # optimiser steps
    batch_size: int = 8  # images per step
    lr: float = 1e-4  # AdamW learning rate (constant after warm-up: a fine-tune)
    warmup_steps: int = 20  # linear warm-up
    weight_decay: float = 1e-4  # AdamW weight decay
    grad_clip: float = 5.0  # gradient-norm clip (0: off)
    w_silhouette: float = 1.0  # silhouette loss (trains the keypoints through PnP and the render)
    w_mask_refine: float = 0.1  # segmentation refined by the rendered silhouette
    rmse_scale_px: float = 3.0  # per-sample weight exp(-rmse / scale), rmse in network-input pixels
    max_rmse_px: float = 15.0  # samples whose PnP RMSE exceeds this (input pixels) get weight 0
    min_agreement_iou: float = 0.5  # mask refinement only from samples whose render and predicted mask agree this well
    agreement_weighting: bool = False  # also weight the silhouette loss by render/mask agreement (ramp 0.3 -> 0.7 IoU)
    mask_target: str = "teacher"  # silhouette target: "teacher" (the initial model's mask, frozen) or "student"
    target_confidence: float = 0.0  # silhouette loss only where the target is this sure, |2p - 1| (0: everywhere)
    # Links whose rendered region (dilated by ignore_margin_px render pixels) the silhouette loss skips:
    # parts the predicted mask misses (the Panda's thin, shiny gripper), which otherwise pull the
    # keypoints inwards. The mask refinement still sees them. Empty: every pixel counts.
    ignore_links: tuple[str, ...] = ()
    ignore_margin_px: int = 2
    adapt_bn: bool = True  # first re-estimate BatchNorm statistics on the collection (AdaBN), no labels needed
    # Weight of the collection's statistics against the training ones (1: replace them). 0.6 was the best of
    # 0.4-1.0 on the shifted cell's validation window (ADD AUC 11.5 against 8.8 at 1.0): a few hundred
    # images of one camera are a noisy estimate, and the training statistics are a useful prior.
    adapt_bn_mix: float = 0.6
    adapt_bn_layers: tuple[str, ...] = ()  # BatchNorm module-name prefixes to adapt (empty: all)
    freeze_bn: bool = True  # BatchNorm in eval mode during the gradient steps (statistics stay as adapted)
    render_scale: float = 0.5  # silhouette rendered at this fraction of the network input size
    render_sigma_px: float = 0.4  # softness of the silhouette edge, render pixels (larger grows the outline)
    max_faces: int = 5000  # mesh decimation budget for the whole robot
    decode_radius: int = 3  # keypoints decoded by a local soft-argmax over this window radius (heatmap cells)
    augment: bool = True  # mild photometric augmentation of the collected images
    seed: int = 0  # batch order and augmentation
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    threads: int = 0  # torch intra-op threads (0: torch default)
    num_workers: int = 1  # image-loading worker processes
    val: str = ""  # optional labelled ctrnet-sim dataset, for monitoring only
    val_every: int = 100  # validate every N steps (with val)
    val_max_frames: int = 100  # validation frames
    log_every: int = 10  # log.csv row every N steps
    checkpoint_every: int = 50  # last.pt every N steps
    time_limit_min: float = 0.0  # stop cleanly after this many minutes (0: no limit); resume with resume=True

    def replace(self, **changes) -> "RefreshConfig":
        return dataclasses.replace(self, **changes)


#: mild colour/noise augmentation: the images are the target camera's own, the aim is robustness
_REFRESH_AUGMENT = AugmentConfig(geometric_prob=0.0, brightness=0.15, contrast=0.15, saturation=0.15, hue=0.02,
                                 blur_prob=0.1, noise_prob=0.2, jpeg_prob=0.0)


# --- data ----------------------------------------------------------------------------------------

class CollectionImages(torch.utils.data.Dataset):
    """Collected samples as network inputs plus the geometry the refresh needs.

    Each item: ``image`` (3, H, W) float in [0, 1] at the network input size (letterboxed, undistorted
    first when the camera has distortion), ``keypoints_base`` (K, 3) metres, ``T_base_link``
    (L, 4, 4) for the renderer's links, ``index``. ``cameras_in[index]`` is the pinhole camera of
    that input image (computed once: a collection's cameras do not change).
    """

    def __init__(self, samples: Sequence[Any], *, robot: RobotModel, spec: KeypointSpec, links: Sequence[str],
                 input_size: tuple[int, int], augment: bool, seed: int):
        self.samples = list(samples)
        self.robot, self.spec, self.links = robot, spec, list(links)
        self.input_size = tuple(int(v) for v in input_size)
        self.augment, self.seed = bool(augment), int(seed)
        self.cameras_in = [self._camera_in(s.camera) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _camera_in(self, cam: PinholeCamera) -> PinholeCamera:
        """The pinhole camera of a network-input image taken by ``cam`` (undistorted, letterboxed)."""
        cam = PinholeCamera(K=cam.K, D=np.zeros(5), width=cam.width, height=cam.height)
        return cam.transformed(cam.letterbox_transform(*self.input_size))

    def __getitem__(self, key) -> dict:
        step, index = (0, key) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        s = self.samples[index]
        rgb = s.image_rgb()
        cam = s.camera
        if (rgb.shape[1], rgb.shape[0]) != (cam.width, cam.height):
            raise RefreshError(f"sample {index}: image {rgb.shape[1]}x{rgb.shape[0]} but camera "
                               f"{cam.width}x{cam.height}")
        if cam.has_distortion:
            rgb = cv2.undistort(rgb, cam.K, cam.D)
        tf = cam.letterbox_transform(*self.input_size)
        img = tf.apply_image(rgb)
        if self.augment:
            x = photometric_augment(img, np.random.default_rng([self.seed, step, index]), _REFRESH_AUGMENT)
        else:
            x = img.astype(np.float32) / np.float32(255.0)
        poses = self.robot.link_poses(s.joints, links=self.links)
        return {"image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
                "keypoints_base": torch.from_numpy(self.robot.keypoints_base(self.spec, s.joints)),
                "T_base_link": torch.from_numpy(np.stack([poses[l] for l in self.links])),
                "index": index}


class _StepSampler(torch.utils.data.Sampler):
    """``(step, index)`` keys; the batch of a step depends only on (seed, step)."""

    def __init__(self, n: int, batch_size: int, *, seed: int, start: int, end: int, rank: int = 0, world: int = 1):
        self.n, self.b, self.seed, self.start, self.end = n, batch_size, seed, start, end
        self.rank, self.world = rank, world

    def __iter__(self):
        total = self.b * self.world  # the global batch; process `rank` takes every world-th key
        for step in range(self.start, self.end):
            epoch, pos = divmod(step * total, self.n)
            keys = []
            while len(keys) < total:
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
                take = perm[pos:pos + total - len(keys)]
                keys += [(step, int(i)) for i in take]
                epoch, pos = epoch + 1, 0
            yield keys[self.rank::self.world]

    def __len__(self) -> int:
        return self.end - self.start


# --- logs ----------------------------------------------------------------------------------------

def plot_refresh_curves(log_path: Path, png_path: Path, *, title: str = "") -> None:
    """Loss curves of a refresh (and validation metrics when logged)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_log(log_path)
    if not rows:
        return

    fig = Figure(figsize=(12, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.add_subplot(1, 3, 1), fig.add_subplot(1, 3, 2), fig.add_subplot(1, 3, 3)
    for key in ("loss", "silhouette", "mask_refine"):
        x, y = log_series(rows, key)
        if x:
            ax1.plot(x, y, label=key)
    if any(float(r.get("loss") or 0) > 0 for r in rows):
        ax1.set_yscale("log")
    ax1.set_title("refresh losses")
    ax1.set_xlabel("step")
    ax1.legend(fontsize=8)
    for key, label in (("iou", "render vs predicted mask IoU"), ("pose_ok", "PnP success"),
                       ("weight", "mean sample weight")):
        x, y = log_series(rows, key)
        if x:
            ax2.plot(x, y, label=label)
    ax2.set_ylim(0, 1)
    ax2.set_title("self-consistency (no labels)")
    ax2.set_xlabel("step")
    ax2.legend(fontsize=8)
    plotted = False
    for key, label in (("val_add_auc", "val ADD AUC"), ("val_pck5", "val PCK@5")):
        x, y = log_series(rows, key)
        if x:
            ax3.plot(x, y, marker="o", ms=3, label=label)
            plotted = True
    x, y = log_series(rows, "rmse_px")
    if x:
        ax3b = ax3.twinx()
        ax3b.plot(x, y, color="grey", alpha=0.6, label="median PnP RMSE (px)")
        ax3b.set_ylabel("median PnP RMSE (input px)")
    ax3.set_title("validation (monitoring only)" if plotted else "PnP RMSE")
    ax3.set_xlabel("step")
    if plotted:
        ax3.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path)


# --- the run -------------------------------------------------------------------------------------

def _init_distributed() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)``; starts the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


@dataclass
class SelfSupervisedTerms:
    """The refresh losses of one batch and what they were computed from."""

    loss: torch.Tensor  # scalar: w_silhouette * silhouette + w_mask_refine * mask_refine
    silhouette: torch.Tensor  # scalar, weighted mean of per-sample MSE(render, predicted mask)
    mask_refine: torch.Tensor  # scalar, weighted mean of per-sample BCE(mask logits, render)
    ok: torch.Tensor  # (B,) bool: PnP found a pose with RMSE <= max_rmse_px
    weight: torch.Tensor  # (B,) sample weights exp(-rmse / rmse_scale_px), 0 where not ok
    T_camera_base: torch.Tensor  # (B, 4, 4) differentiable pose
    pnp: Any  # PnPBatchResult of the forward solve
    silhouettes: torch.Tensor | None  # (B, h, w) rendered, or None when no sample had a pose
    ious: list[float] = field(default_factory=list)  # render vs predicted mask IoU of the usable samples


def self_supervised_losses(heatmaps: torch.Tensor, mask_logits: torch.Tensor, *, keypoints_base: torch.Tensor,
                           T_base_link: torch.Tensor, cameras: Sequence[PinholeCamera], renderer: torch.nn.Module,
                           config: RefreshConfig, heatmap_stride: int, heatmaps_are_logits: bool,
                           render_size: tuple[int, int], pnp_config: PnPConfig = PnPConfig(),
                           target_mask: torch.Tensor | None = None,
                           ignore: torch.nn.Module | None = None) -> SelfSupervisedTerms:
    """CtRNet's self-supervised losses for one batch (see the module docstring).

    Args:
        heatmaps: (B, K, h, w) raw keypoint heatmaps (logits if ``heatmaps_are_logits``).
        mask_logits: (B, 1, h', w') raw segmentation logits.
        keypoints_base: (B, K, 3) keypoints in the robot base frame, metres.
        T_base_link: (B, L, 4, 4) link poses for ``renderer``'s links.
        cameras: B pinhole cameras of the network-input images (no distortion).
        renderer: a :class:`~ctrnet_ros.train.silhouette.SilhouetteRenderer`.
        render_size: (w, h) of the rendered silhouette (the mask is resized to it).
        target_mask: (B, 1, h', w') mask logits the silhouette must match instead of ``mask_logits``
            (the frozen initial model's: a target that cannot drift with the network being trained).
        ignore: a renderer of ``config.ignore_links`` alone (``renderer``'s links, see
            :meth:`RobotMeshSet.only`): the silhouette loss skips the region they render to at the current
            pose, dilated by ``config.ignore_margin_px``.
    """
    device = heatmaps.device
    hm = heatmaps.float()
    B = hm.shape[0]
    _, conf = decode_heatmaps(hm.detach(), logits=heatmaps_are_logits, method="argmax")
    # every cell of the window gets a gradient (quadratic decoding moves at most half a cell)
    uv_hm = local_soft_argmax(hm, logits=heatmaps_are_logits, radius=config.decode_radius)
    uv = heatmap_to_input_coords(uv_hm, heatmap_stride).double()  # (B, K, 2) input px
    T, res = differentiable_pnp(keypoints_base.double(), uv, list(cameras), weights=conf.double(), config=pnp_config)
    ok = torch.from_numpy(res.ok & (res.rmse_px <= config.max_rmse_px)).to(device)
    rmse = torch.from_numpy(np.nan_to_num(res.rmse_px, posinf=1e6)).to(device)
    w = torch.where(ok, torch.exp(-rmse / config.rmse_scale_px), torch.zeros_like(rmse)).float()
    rw, rh = render_size
    m_logits = F.interpolate(mask_logits.float(), size=(rh, rw), mode="bilinear", align_corners=False)[:, 0]
    mask = torch.sigmoid(m_logits)
    if target_mask is not None:
        target = torch.sigmoid(F.interpolate(target_mask.detach().float(), size=(rh, rw), mode="bilinear",
                                             align_corners=False)[:, 0])
    else:
        target = mask.detach()
    sil, ious = None, []
    if bool(ok.any()):
        K_r = torch.from_numpy(np.stack([c.transformed(c.resize_transform(rw, rh)).K for c in cameras])).to(device)
        sil = renderer(T.float(), T_base_link.float(), K_r.float(), image_size=(rw, rh))  # (B, rh, rw)
        # pixels the target is unsure about do not count (target_confidence 0: every pixel does)
        sure = ((2.0 * target - 1.0).abs() >= config.target_confidence).float()
        if ignore is not None:
            with torch.no_grad():
                ig = ignore(T.detach().float(), T_base_link.float(), K_r.float(), image_size=(rw, rh))
                m = max(0, int(config.ignore_margin_px))
                if m:
                    ig = F.max_pool2d(ig[:, None], kernel_size=2 * m + 1, stride=1, padding=m)[:, 0]
            sure = sure * (1.0 - ig)
        per_sil = (sure * (sil - target) ** 2).sum(dim=(1, 2)) / sure.sum(dim=(1, 2)).clamp_min(1.0)
        per_ref = F.binary_cross_entropy_with_logits(m_logits, sil.detach(), reduction="none").mean(dim=(1, 2))
        sil_np, mask_np = sil.detach().cpu().numpy(), target.cpu().numpy()
        iou_all = [(mask_iou(mask_np[b], sil_np[b]) if bool(ok[b]) else float("nan")) for b in range(B)]
        w_sil = w
        if config.agreement_weighting:  # trust poses whose render already resembles the mask
            ramp = torch.tensor([min(1.0, max(0.0, (i - 0.3) / 0.4)) if math.isfinite(i) else 0.0 for i in iou_all],
                                device=device, dtype=w.dtype)
            w_sil = w * ramp
        l_sil = (w_sil * per_sil).sum() / w_sil.sum().clamp_min(1e-6) + 0.0 * hm.sum()
        # A render is a pseudo-label for the segmentation only where it already agrees with it: a wrong
        # pose's silhouette would otherwise teach the mask head the wrong robot (self-reinforcing).
        agree = torch.tensor([i >= config.min_agreement_iou for i in iou_all], device=device)
        w_ref = torch.where(agree, w, torch.zeros_like(w))
        l_ref = (w_ref * per_ref).sum() / w_ref.sum().clamp_min(1e-6) + 0.0 * m_logits.sum()
        ious = [i for i in iou_all if math.isfinite(i)]
    else:  # no usable pose in this batch: a zero loss that still reaches every parameter (DDP)
        l_sil = l_ref = m_logits.sum() * 0.0 + hm.sum() * 0.0
    loss = config.w_silhouette * l_sil + config.w_mask_refine * l_ref
    return SelfSupervisedTerms(loss=loss, silhouette=l_sil, mask_refine=l_ref, ok=ok, weight=w, T_camera_base=T,
                               pnp=res, silhouettes=sil, ious=ious)


def adapt_batchnorm(model: torch.nn.Module, images: torch.utils.data.Dataset, *, batch_size: int,
                    device: torch.device, num_workers: int = 0, mix: float = 1.0,
                    layers: Sequence[str] = ()) -> int:
    """Re-estimate BatchNorm statistics on ``images`` (AdaBN: Li et al., 2016).

    The running mean and variance become the plain average over all the images (un-augmented), as
    the new camera shows them; no weight changes. ``mix`` < 1 keeps part of the training statistics:
    each layer then holds the moments of the mixture ``mix * new + (1 - mix) * old``. ``layers``
    (module-name prefixes, e.g. ``"trunk.layer1"``) limits the adaptation to those BatchNorm layers;
    the others keep their statistics and normalise with them during the pass. Returns the number
    of images used.
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"adapt_bn_mix must be in [0, 1], got {mix}")
    named = _named_batchnorms(model)
    bns = [m for n, m in named if not layers or any(n.startswith(p) for p in layers)]
    if layers and not bns:
        raise ValueError(f"adapt_bn_layers {list(layers)} match no BatchNorm layer; the model's are "
                         f"{[n for n, _ in named]}")
    if not bns:
        return 0
    momenta = [m.momentum for m in bns]
    old = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    model.train()
    adapted = {id(m) for m in bns}
    for _, m in named:  # the layers left out normalise with their stored statistics
        if id(m) not in adapted:
            m.eval()
    n = 0
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    with torch.no_grad():
        for batch in loader:
            model(batch["image"].to(device))
            n += int(batch["image"].shape[0])
        for m, mom, (mean0, var0) in zip(bns, momenta, old):
            m.momentum = mom
            if mix < 1.0:
                mean1, var1 = m.running_mean.clone(), m.running_var.clone()
                m.running_mean.copy_(mix * mean1 + (1.0 - mix) * mean0)
                m.running_var.copy_(mix * var1 + (1.0 - mix) * var0 + mix * (1.0 - mix) * (mean1 - mean0) ** 2)
    model.train(was_training)
    return n


def _named_batchnorms(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _train_mode(model: torch.nn.Module, *, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` the BatchNorm layers stay in eval mode (stored statistics)."""
    model.train()
    if freeze_bn:
        for _, m in _named_batchnorms(model):
            m.eval()


def refresh(config: RefreshConfig, *, resume: bool = False, progress: bool = True,
            samples: Sequence[Any] | None = None) -> dict[str, Any]:
    """Run (or resume) a self-supervised refresh; see the module docstring.

    Args:
        config: the run. ``config.data`` is read with :func:`ctrnet_ros.collect.dataset.load_collection`
            unless ``samples`` is given.
        resume: continue ``<out_dir>/last.pt`` when present.
        samples: collected samples (objects with ``image_rgb()``, ``camera``, ``joints``), e.g. for tests.
    Returns:
        ``dict(step, steps, refreshed, log, curves, train_seconds, val_metrics, problems)``.
    """
    from .silhouette import RobotMeshSet, SilhouetteRenderer

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, result_path = out / "last.pt", out / "refreshed.pt"
    log_path, png_path = out / "log.csv", out / "curves.png"
    problems: list[str] = []
    if samples is None:
        from ..collect.dataset import load_collection

        if not config.data:
            raise RefreshError("no data: pass --data DIR (a collection written by ctrnet-collect or collector_node)")
        coll = load_collection(config.data)
        samples, problems = list(coll.samples), list(coll.problems)
        for p in problems:
            logger.warning("collection: %s", p)
    if len(samples) < 1:
        raise RefreshError(f"collection {config.data!r} holds no usable samples")

    if config.mask_target not in ("teacher", "student"):
        raise RefreshError(f"mask_target must be 'teacher' or 'student', not {config.mask_target!r}")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    rank, world, local_rank = _init_distributed()
    device = resolve_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)  # torchrun: one GPU per process
        torch.cuda.set_device(device)
    is_main = rank == 0
    start_from = last_path if resume and last_path.is_file() else Path(config.init)
    try:
        model, model_config, extra = load_checkpoint(start_from, map_location="cpu")
    except ModelFileError as exc:
        raise RefreshError(f"cannot load the initial model: {exc}") from exc
    if not getattr(model, "has_mask_head", False):
        raise RefreshError(f"{start_from}: the refresh needs a model with a segmentation head")
    names = list(extra.get("keypoint_names", []))
    robot_name = config.robot or str(extra.get("robot") or "")
    if not robot_name:
        raise RefreshError(f"{start_from} names no robot; pass --robot")
    spec = KeypointSpec.builtin(robot_name)
    if spec.names != names:
        raise RefreshError(f"model keypoints {names} differ from the {robot_name} keypoint spec {spec.names}")
    robot = RobotModel.from_spec(spec)
    input_size = tuple(int(v) for v in extra.get("input_size", model_config.input_size))
    stride = int(model.heatmap_stride)
    decode_method = str(extra.get("decode_method", "quadratic"))

    meshes = RobotMeshSet.from_robot(robot, max_faces=config.max_faces)
    renderer = SilhouetteRenderer(meshes, sigma=config.render_sigma_px).to(device)
    rw, rh = (max(8, int(round(v * config.render_scale))) for v in input_size)
    ignore = None
    if config.ignore_links:
        try:
            ignore = SilhouetteRenderer(meshes.only(config.ignore_links), sigma=config.render_sigma_px).to(device)
        except ValueError as exc:
            raise RefreshError(f"ignore_links: {exc}") from exc

    ds = CollectionImages(samples, robot=robot, spec=spec, links=meshes.links, input_size=input_size,
                          augment=config.augment, seed=config.seed)
    start_step = int(extra.get("refresh_step", 0)) if start_from == last_path else 0
    train_seconds = float(extra.get("refresh_seconds", 0.0)) if start_from == last_path else 0.0
    model.to(device)
    if config.adapt_bn:
        plain = CollectionImages(samples, robot=robot, spec=spec, links=meshes.links, input_size=input_size,
                                 augment=False, seed=config.seed)

        def adapt(m: torch.nn.Module) -> int:  # the model and its mask teacher are adapted alike
            try:
                return adapt_batchnorm(m, plain, batch_size=config.batch_size, device=device,
                                       mix=config.adapt_bn_mix, layers=config.adapt_bn_layers)
            except ValueError as exc:
                raise RefreshError(str(exc)) from exc

        if start_step == 0:
            n = adapt(model)
            logger.info("BatchNorm statistics re-estimated on %d collected images", n)
    teacher = None
    if config.mask_target == "teacher":  # the initial model (BatchNorm adapted), frozen, also after a resume
        if start_from == last_path:
            try:
                teacher = load_checkpoint(Path(config.init), map_location="cpu")[0].to(device)
            except ModelFileError as exc:
                raise RefreshError(f"cannot load the initial model {config.init} as the mask teacher: {exc}") from exc
            if config.adapt_bn:
                adapt(teacher)
        else:
            teacher = copy.deepcopy(model)
        teacher.eval().requires_grad_(False)
    _train_mode(model, freeze_bn=config.freeze_bn)
    net = model
    if world > 1:
        # every process sees batch_size images per step; gradients are averaged across processes
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if start_from == last_path and "refresh_optimizer" in extra:
        opt.load_state_dict(extra["refresh_optimizer"])
        logger.info("resumed %s at step %d of %d", last_path, start_step, config.steps)
        if is_main:
            write_log(log_path, LOG_COLUMNS, read_log(log_path, up_to_step=start_step))
    elif is_main:
        log_path.unlink(missing_ok=True)
    if is_main:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")
    pretrain_extra = {k: v for k, v in without_resume_state(extra).items() if not k.startswith("refresh")}
    hardware = hardware_description(device)

    val_ds = None
    if config.val:
        from .data import KeypointTrainDataset, open_datasets
        from .pretrain import evaluate

        val_ds = KeypointTrainDataset(open_datasets([config.val]), input_size=input_size, heatmap_stride=stride,
                                      sigma=1.5, augment=None, max_frames=config.val_max_frames)
    val_metrics: dict[str, float] = {}

    def validate(step: int) -> None:
        nonlocal val_metrics
        if val_ds is None or not is_main:
            return
        val_metrics = evaluate(model, val_ds, device=device, batch_size=16, decode_method=decode_method)
        _train_mode(model, freeze_bn=config.freeze_bn)
        append_log(log_path, {"step": step, **{f"val_{k}": val_metrics[k]
                                               for k in ("pck5", "median_px", "mask_iou", "add_auc")}}, LOG_COLUMNS)
        logger.info("step %d: validation PCK@5 %.1f %%, median %.2f px, mask IoU %.3f, ADD AUC %.1f", step,
                    val_metrics["pck5"], val_metrics["median_px"], val_metrics["mask_iou"], val_metrics["add_auc"])

    def checkpoint_extra(step: int, *, with_optimizer: bool) -> dict[str, Any]:
        info = {"init": str(config.init), "data": str(config.data), "samples": len(samples), "steps": step,
                "batch_size": config.batch_size, "images_seen": step * config.batch_size,
                "wall_clock_s": train_seconds, "hardware": hardware, "torch_version": str(torch.__version__),
                "config": dataclasses.asdict(config),
                "losses": "silhouette (keypoints via differentiable PnP + soft render) + mask refinement"}
        e = {**pretrain_extra, "refresh": info, "refresh_step": step, "refresh_seconds": train_seconds,
             # metrics of *this* model only (the pretrained model's would be misleading on its card)
             "val_metrics": dict(val_metrics), "best_metrics": {}}
        if with_optimizer:
            e["refresh_optimizer"] = opt.state_dict()
        return e

    arch = str((extra.get("train_config") or {}).get("arch") or getattr(model, "arch", "ctrnet_resnet18"))
    sampler = _StepSampler(len(ds), config.batch_size, seed=config.seed, start=start_step, end=config.steps,
                           rank=rank, world=world)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=config.num_workers,
                                         persistent_workers=False)
    if start_step == 0:
        validate(0)
    pnp_config = PnPConfig(ransac_threshold_px=4.0)  # network-input pixels (half the camera's at 640x480)
    acc: dict[str, list[float]] = {k: [] for k in ("loss", "silhouette", "mask_refine", "pose_ok", "rmse_px",
                                                   "weight", "iou")}
    n_img, t_int = 0, 0.0
    step = start_step
    slice_start = time.perf_counter()
    stopped_early = False
    bar = tqdm(total=config.steps, initial=start_step, desc="refresh", unit="step", disable=not progress,
               dynamic_ncols=True)
    try:
        t_last = time.perf_counter()
        for batch in loader:
            lr = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
            for g in opt.param_groups:
                g["lr"] = lr
            image = batch["image"].to(device)
            B = image.shape[0]
            raw = net(image)
            target_mask = None
            if teacher is not None:
                with torch.no_grad():
                    target_mask = teacher(image)["mask_logits"]
            cams = [ds.cameras_in[int(i)] for i in batch["index"]]
            terms = self_supervised_losses(
                raw["heatmaps"], raw["mask_logits"], keypoints_base=batch["keypoints_base"].to(device),
                T_base_link=batch["T_base_link"].to(device), cameras=cams, renderer=renderer, config=config,
                heatmap_stride=stride, heatmaps_are_logits=bool(model.heatmaps_are_logits), render_size=(rw, rh),
                pnp_config=pnp_config, target_mask=target_mask, ignore=ignore)
            loss, l_sil, l_ref, ok, w, res = (terms.loss, terms.silhouette, terms.mask_refine, terms.ok,
                                              terms.weight, terms.pnp)
            ious = terms.ious
            if not torch.isfinite(loss):
                raise RefreshError(f"loss became {loss.item()} at step {step}; lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            step += 1
            now = time.perf_counter()
            train_seconds += now - t_last
            t_int += now - t_last
            n_img += B
            for k, v in (("loss", loss.item()), ("silhouette", l_sil.item()), ("mask_refine", l_ref.item()),
                         ("pose_ok", float(ok.float().mean())), ("weight", float(w.mean()))):
                acc[k].append(v)
            finite = res.rmse_px[np.isfinite(res.rmse_px)]
            if finite.size:
                acc["rmse_px"].append(float(np.median(finite)))
            acc["iou"] += [i for i in ious if math.isfinite(i)]
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", ok=f"{float(ok.float().mean()):.2f}")
            if is_main and (step % config.log_every == 0 or step == config.steps):
                row = {"step": step, "lr": lr, "images_per_s": n_img / max(t_int, 1e-9), "train_s": train_seconds,
                       **{k: (float(np.mean(v)) if v else float("nan")) for k, v in acc.items()}}
                append_log(log_path, row, LOG_COLUMNS)
                acc = {k: [] for k in acc}
                n_img, t_int = 0, 0.0
            if val_ds is not None and is_main and (step % config.val_every == 0 or step == config.steps):
                validate(step)
                plot_refresh_curves(log_path, png_path, title=f"refresh {out}")
            t_last = time.perf_counter()
            if is_main and step % config.checkpoint_every == 0 and step < config.steps:
                save_checkpoint(last_path, model, model_config, checkpoint_extra(step, with_optimizer=True), arch=arch)
            if world == 1 and config.time_limit_min > 0 and \
                    time.perf_counter() - slice_start > 60.0 * config.time_limit_min:
                logger.info("time limit reached at step %d; resume with --resume", step)
                stopped_early = True
                break
    finally:
        bar.close()
    model.eval()
    if is_main:
        save_checkpoint(last_path, model, model_config, checkpoint_extra(step, with_optimizer=True), arch=arch)
        save_checkpoint(result_path, model, model_config, checkpoint_extra(step, with_optimizer=False), arch=arch)
        plot_refresh_curves(log_path, png_path, title=f"refresh {out}")
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return {"rank": rank, "step": step, "steps": config.steps, "stopped_early": stopped_early or step < config.steps,
            "refreshed": str(result_path), "last": str(last_path), "log": str(log_path), "curves": str(png_path),
            "train_seconds": train_seconds, "val_metrics": val_metrics, "problems": problems}
