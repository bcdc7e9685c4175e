"""Training samples from ``ctrnet-sim`` datasets: letterbox, augmentation, heatmap and mask targets.

Every geometric change of an image is an :class:`~ctrnet_ros.core.camera.ImageTransform` (camera
pixels -> network-input pixels), applied once to the image, the mask and the keypoints alike, so
labels never drift from pixels. Without augmentation the transform is exactly the letterbox that
:class:`~ctrnet_ros.core.estimator.CameraToRobotEstimator` applies at inference
(``PinholeCamera.letterbox_transform(*input_size)``, warped by ``ImageTransform.apply_image``).

A sample is addressed by a key ``(epoch, index)``; all its random draws come from
``numpy.random.default_rng([seed, epoch, index])``, so a sample is the same whichever worker makes
it, in whichever run. :class:`StepBatchSampler` makes the data order a function of the step alone
(a concatenation of seeded per-epoch permutations), which is what makes resuming exact.

Sample (``KeypointTrainDataset[(epoch, index)]``), K keypoints, input (W, H), heatmap stride s:

==================  ===================  ===============================================================
key                 shape, dtype         meaning
==================  ===================  ===============================================================
image               (3, H, W) float32    RGB in [0, 1] at the network input size
heatmaps            (K, H/s, W/s) f32    Gaussian targets (peak 1); all zero where the keypoint is not
                                         inside the input image
heatmap_weight      (K,) float32         weight of each map in the heatmap loss (1, or occluded_weight)
keypoint_weight     (K,) float32         weight in the coordinate loss: 0 outside the input image
keypoints           (K, 2) float32       (u, v) network-input pixels (0 where outside the image)
mask                (1, H/s, W/s) f32    robot coverage of each heatmap cell, in [0, 1]
transform           (4,) float64         (a_x, b_x, a_y, b_y): camera pixels -> input pixels
uv_camera           (K, 2) float64       ground-truth keypoints, camera pixels (native resolution)
in_image_camera     (K,) bool            keypoint projects into the camera image
K                   (3, 3) float64       camera intrinsics
camera_size         (2,) int64           camera (width, height)
T_camera_base       (4, 4) float64       ground-truth pose
keypoints_base      (K, 3) float64       keypoints in the robot base frame, metres
==================  ===================  ===============================================================
"""

from __future__ import annotations

import logging
import math
import os
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from ..core.camera import ImageTransform, PinholeCamera
from ..net.decode import render_gaussian_heatmaps
from ..sim.dataset import DatasetError, SimDataset
from .config import AugmentConfig

__all__ = ["ShardCachedDataset", "KeypointTrainDataset", "StepBatchSampler", "prepare_sample",
           "random_view_transform", "motion_blur_kernel", "photometric_augment", "open_datasets", "dataset_summary"]

logger = logging.getLogger(__name__)


class ShardCachedDataset(SimDataset):
    """A :class:`~ctrnet_ros.sim.dataset.SimDataset` that keeps every shard it has read in memory.

    ``SimDataset`` keeps only the last shard, which is right for sequential reading but reloads a
    whole shard (~24 MB at 320x240) per frame under random access. Shards hold PNG bytes, so
    keeping them costs about the dataset's size on disk (1.1 GB for 12,000 frames at 320x240).
    """

    def __init__(self, root: str | os.PathLike, *, allow_incomplete: bool = False):
        super().__init__(root, allow_incomplete=allow_incomplete)
        self._all_shards: dict[int, dict[str, np.ndarray]] = {}

    def _shard(self, s: int) -> dict[str, np.ndarray]:
        if s not in self._all_shards:
            with np.load(self.root / self._shards[s]["file"]) as z:
                self._all_shards[s] = {k: z[k] for k in z.files}
        return self._all_shards[s]


def open_datasets(dirs: Sequence[str | os.PathLike], *, allow_incomplete: bool = False) -> list[ShardCachedDataset]:
    """Open dataset directories; all must name the same keypoints in the same order."""
    if not dirs:
        raise DatasetError("no dataset directory given")
    sets = [ShardCachedDataset(d, allow_incomplete=allow_incomplete) for d in dirs]
    names = sets[0].keypoint_names
    for ds in sets[1:]:
        if ds.keypoint_names != names:
            raise DatasetError(f"{ds.root} has keypoints {ds.keypoint_names}, {sets[0].root} has {names}")
    for ds in sets:
        if len(ds) == 0:
            raise DatasetError(f"{ds.root} holds no complete shard yet")
    return sets


def dataset_summary(ds: SimDataset) -> dict:
    """Plain description of a dataset for logs, checkpoints and model cards."""
    spec = ds.spec
    return {"dir": str(ds.root), "robot": spec.robot, "domain": str(spec.domain.get("name", "?")),
            "seed": int(spec.seed), "frames": len(ds), "frames_planned": int(spec.num_frames),
            "width": int(spec.width), "height": int(spec.height)}


# --- augmentation ------------------------------------------------------------------------------

def random_view_transform(rng: np.random.Generator, input_size: tuple[int, int],
                          augment: AugmentConfig) -> ImageTransform:
    """Random zoom about a shifted centre, in network-input pixels: ``u' = z (u - c) + (W - 1) / 2``.

    Composed after the letterbox (``letterbox.then(view)``) it crops/zooms the input image; ``z``
    is log-uniform in ``augment.scale_range`` and ``c`` is the image centre shifted by up to
    ``translate_frac`` of the size.
    """
    w, h = input_size
    lo, hi = augment.scale_range
    zoom = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    cx = (w - 1) / 2.0 + rng.uniform(-1.0, 1.0) * augment.translate_frac * w
    cy = (h - 1) / 2.0 + rng.uniform(-1.0, 1.0) * augment.translate_frac * h
    return ImageTransform(a_x=zoom, b_x=(w - 1) / 2.0 - zoom * cx, a_y=zoom, b_y=(h - 1) / 2.0 - zoom * cy,
                          out_width=w, out_height=h)


def motion_blur_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised line kernel of ``length`` px at ``angle`` rad, centred (odd size): a symmetric
    blur, so it moves no keypoint."""
    half = max(1, int(math.ceil(length / 2.0)))
    size = 2 * half + 1
    kernel = np.zeros((size, size), np.float32)
    d = np.array([math.cos(angle), math.sin(angle)]) * (length / 2.0)
    c = float(half)
    cv2.line(kernel, (int(round(c - d[0])), int(round(c - d[1]))), (int(round(c + d[0])), int(round(c + d[1]))),
             1.0, thickness=1, lineType=cv2.LINE_AA)
    kernel = 0.5 * (kernel + kernel[::-1, ::-1])  # exactly point-symmetric about the centre
    return kernel / kernel.sum()


def photometric_augment(image: np.ndarray, rng: np.random.Generator, augment: AugmentConfig) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W, 3) float32 RGB in [0, 1]: colour jitter, blur, noise, JPEG.

    Pixel positions are untouched (blur is symmetric), so keypoint labels stay valid.
    """
    # The draws happen in a fixed order whatever is enabled, so changing one strength does not
    # reshuffle the others' randomness.
    brightness = 1.0 + rng.uniform(-1.0, 1.0) * augment.brightness
    contrast = 1.0 + rng.uniform(-1.0, 1.0) * augment.contrast
    saturation = 1.0 + rng.uniform(-1.0, 1.0) * augment.saturation
    hue = rng.uniform(-1.0, 1.0) * augment.hue
    do_blur, blur_sigma = rng.random() < augment.blur_prob, rng.uniform(*augment.blur_sigma)
    do_noise, noise_std = rng.random() < augment.noise_prob, rng.uniform(*augment.noise_std)
    do_jpeg, quality = rng.random() < augment.jpeg_prob, int(rng.integers(augment.jpeg_quality[0],
                                                                        augment.jpeg_quality[1] + 1))
    noise_seed = int(rng.integers(2**31))
    # Camera-pipeline effects, drawn last (see AugmentConfig) and only when enabled, so the older
    # configurations keep their exact randomness.
    gains = gamma = motion = None
    if augment.white_balance > 0.0:
        gains = (1.0 + rng.uniform(-1.0, 1.0, size=3) * augment.white_balance).astype(np.float32)
    if augment.gamma != (1.0, 1.0):
        gamma = float(np.exp(rng.uniform(math.log(augment.gamma[0]), math.log(augment.gamma[1]))))
    if augment.motion_blur_prob > 0.0 and rng.random() < augment.motion_blur_prob:
        motion = (float(rng.uniform(*augment.motion_blur_px)), float(rng.uniform(0.0, math.pi)))

    if do_jpeg:  # first: compression happens in the camera, before anything we model as noise
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            image = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    x = image.astype(np.float32) / np.float32(255.0)  # as inference.image_to_tensor_layout
    if hue != 0.0 or saturation != 1.0:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # float: H in [0, 360), S, V in [0, 1]
        hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(hue * 360.0), np.float32(360.0))
        hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(saturation), 0.0, 1.0)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if brightness != 1.0:
        x = x * np.float32(brightness)
    if contrast != 1.0:
        grey = np.float32((x @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
        x = (x - grey) * np.float32(contrast) + grey
    if gains is not None:
        x = x * gains
    if gamma is not None:
        x = np.power(np.clip(x, 0.0, 1.0), np.float32(gamma))
    if motion is not None:
        x = cv2.filter2D(x, -1, motion_blur_kernel(*motion), borderType=cv2.BORDER_REFLECT)
    if do_blur:
        x = cv2.GaussianBlur(x, (0, 0), sigmaX=float(blur_sigma), borderType=cv2.BORDER_REFLECT)
    if do_noise:
        x = x + np.random.default_rng(noise_seed).normal(0.0, noise_std, size=x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0)


def prepare_sample(frame: dict, *, input_size: tuple[int, int], heatmap_stride: int, sigma: float,
                   augment: AugmentConfig | None, rng: np.random.Generator | None,
                   occluded_weight: float = 1.0) -> dict[str, np.ndarray | torch.Tensor]:
    """One :class:`~ctrnet_ros.sim.dataset.SimDataset` frame -> a training sample (see module table).

    Args:
        frame: ``SimDataset`` item (``rgb``, ``mask``, ``K``, ``keypoints_uv``, ``in_image``,
            ``visible``, ``T_camera_base``, ``keypoints_base``).
        input_size: network input (W, H).
        heatmap_stride: heatmap cell size in input pixels.
        sigma: Gaussian target std in heatmap cells.
        augment: augmentation, or None for the plain letterbox (validation).
        rng: generator for the augmentation draws (required when ``augment`` is given).
        occluded_weight: heatmap/coordinate weight of in-image but occluded keypoints.
    """
    w, h = (int(v) for v in input_size)
    s = int(heatmap_stride)
    if w % s or h % s:
        raise ValueError(f"input_size {input_size} must be divisible by the heatmap stride {s}")
    rgb = frame["rgb"]
    cam_h, cam_w = rgb.shape[:2]
    camera = PinholeCamera(K=frame["K"], D=np.zeros(5), width=cam_w, height=cam_h)
    tf = camera.letterbox_transform(w, h)
    if augment is not None and rng is None:
        raise ValueError("augmentation needs a random generator")
    if augment is not None and rng.random() < augment.geometric_prob:
        tf = tf.then(random_view_transform(rng, (w, h), augment))
    image = tf.apply_image(rgb)  # (H, W, 3) uint8; exactly the estimator's letterbox when not augmented
    if augment is not None:
        x = photometric_augment(image, rng, augment)
    else:
        x = image.astype(np.float32) / np.float32(255.0)  # as inference.image_to_tensor_layout

    # Mask: warp the coverage to the input grid, then average over each heatmap cell.
    mask_in = tf.apply_image(frame["mask"].astype(np.float32))
    mask_hm = cv2.resize(mask_in, (w // s, h // s), interpolation=cv2.INTER_AREA)

    uv_cam = np.asarray(frame["keypoints_uv"], dtype=np.float64)
    in_cam = np.asarray(frame["in_image"], dtype=bool) & np.all(np.isfinite(uv_cam), axis=1)
    uv_in = tf.apply_coords(np.where(in_cam[:, None], uv_cam, 0.0))
    with np.errstate(invalid="ignore"):
        inside = in_cam & (uv_in[:, 0] >= -0.5) & (uv_in[:, 0] <= w - 0.5) & (uv_in[:, 1] >= -0.5) \
            & (uv_in[:, 1] <= h - 0.5)
    visible = np.asarray(frame["visible"], dtype=bool)
    weight_in = np.where(visible, 1.0, float(occluded_weight))
    uv_in = np.where(inside[:, None], uv_in, 0.0)
    heatmaps = render_gaussian_heatmaps(torch.from_numpy(uv_in[None]).float(), torch.from_numpy(inside[None]),
                                        (w // s, h // s), s, sigma)[0]  # (K, h/s, w/s)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
        "heatmaps": heatmaps,
        # A keypoint outside the input image still supervises its map (all zero: "not here").
        "heatmap_weight": torch.from_numpy(np.where(inside, weight_in, 1.0).astype(np.float32)),
        "keypoint_weight": torch.from_numpy(np.where(inside, weight_in, 0.0).astype(np.float32)),
        "keypoints": torch.from_numpy(uv_in.astype(np.float32)),
        "mask": torch.from_numpy(np.ascontiguousarray(mask_hm, dtype=np.float32)[None]),
        "transform": torch.tensor([tf.a_x, tf.b_x, tf.a_y, tf.b_y], dtype=torch.float64),
        "uv_camera": torch.from_numpy(uv_cam.copy()),
        "in_image_camera": torch.from_numpy(in_cam.copy()),
        "K": torch.from_numpy(np.asarray(frame["K"], dtype=np.float64).copy()),
        "camera_size": torch.tensor([cam_w, cam_h], dtype=torch.int64),
        "T_camera_base": torch.from_numpy(np.asarray(frame["T_camera_base"], dtype=np.float64).copy()),
        "keypoints_base": torch.from_numpy(np.asarray(frame["keypoints_base"], dtype=np.float64).copy()),
    }


class KeypointTrainDataset(torch.utils.data.Dataset):
    """Samples from one or more ``ctrnet-sim`` datasets, indexed by ``(epoch, index)`` keys.

    Args:
        datasets: opened datasets (see :func:`open_datasets`), concatenated in order.
        input_size: network input (W, H).
        heatmap_stride: heatmap stride of the model.
        sigma: Gaussian target std, heatmap cells.
        augment: augmentation config, or None (plain letterbox, e.g. validation).
        seed: augmentation seed.
        occluded_weight: see :func:`prepare_sample`.
        max_frames: use only the first ``max_frames`` frames (0 = all).
    """

    def __init__(self, datasets: Sequence[SimDataset], *, input_size: tuple[int, int], heatmap_stride: int,
                 sigma: float, augment: AugmentConfig | None = None, seed: int = 0, occluded_weight: float = 1.0,
                 max_frames: int = 0):
        self.datasets = list(datasets)
        self.input_size = tuple(int(v) for v in input_size)
        self.heatmap_stride = int(heatmap_stride)
        self.sigma = float(sigma)
        self.augment = augment
        self.seed = int(seed)
        self.occluded_weight = float(occluded_weight)
        self._starts = np.cumsum([0] + [len(d) for d in self.datasets])
        total = int(self._starts[-1])
        self._len = min(total, max_frames) if max_frames else total

    @property
    def keypoint_names(self) -> list[str]:
        return self.datasets[0].keypoint_names

    def __len__(self) -> int:
        return self._len

    def frame(self, index: int) -> dict:
        """The raw ``SimDataset`` item behind global frame ``index``."""
        if not 0 <= index < self._len:
            raise IndexError(f"frame {index} out of range for {self._len} frames")
        d = int(np.searchsorted(self._starts, index, side="right") - 1)
        return self.datasets[d][index - int(self._starts[d])]

    def __getitem__(self, key) -> dict:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        rng = np.random.default_rng([self.seed, epoch, index]) if self.augment is not None else None
        return prepare_sample(self.frame(index), input_size=self.input_size, heatmap_stride=self.heatmap_stride,
                              sigma=self.sigma, augment=self.augment, rng=rng,
                              occluded_weight=self.occluded_weight)


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` keys for steps ``start_step .. end_step - 1``.

    The frame stream is the concatenation of per-epoch permutations ``default_rng([seed, epoch])``;
    step ``t`` takes stream positions ``[t B, (t + 1) B)``, so the batch of a step depends only on
    (seed, step, dataset size, batch size), never on where a run was interrupted.
    """

    def __init__(self, num_frames: int, batch_size: int, *, seed: int, start_step: int, end_step: int):
        if num_frames < 1:
            raise ValueError("empty dataset")
        self.num_frames, self.batch_size, self.seed = int(num_frames), int(batch_size), int(seed)
        self.start_step, self.end_step = int(start_step), int(end_step)
        self._perm_cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            if len(self._perm_cache) >= 2:  # a batch spans at most two epochs
                self._perm_cache.clear()
            self._perm_cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.num_frames)
        return self._perm_cache[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The keys of step ``step``."""
        keys = []
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, i = divmod(pos, self.num_frames)
            keys.append((epoch, int(self._perm(epoch)[i])))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)
