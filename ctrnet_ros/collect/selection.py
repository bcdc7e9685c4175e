"""Does a camera frame add information to the collection? The checks, each with a reason when it says no.

A frame is saved only when every check passes (:class:`~ctrnet_ros.collect.collector.Collector` runs
them cheapest first):

* **rate** (:class:`StampRateLimiter`): at most ``max_rate_hz`` saves per second of *image-stamp* time,
  so a replayed bag and the live node save the same frames whatever the wall-clock speed.
* **joint-space novelty** (:class:`JointNovelty`): the Euclidean (L2) distance between the frame's joint
  vector and *every* saved sample's, over the joints the keypoints depend on, must be at least
  ``min_joint_distance`` (radians; metres for a prismatic joint). L2 rather than max-abs: a pose that
  differs a little in every joint is as new as one that differs a lot in one, and the calibration
  node's fusion measures frame diversity the same way (``fusion.min_joint_distance``).
* **sharpness** (:func:`sharpness`): the variance of the Laplacian of the grey image, measured at a fixed
  width so the threshold does not depend on the camera's resolution.
* **robot in view** (:func:`detection_quality`), only with a model: the median keypoint confidence, and
  for a model with a mask head the fraction of the image the predicted robot mask covers.

Every check returns ``None`` to accept or a :class:`Rejection` (a reason tag from :data:`REASONS` and a
sentence for logs and diagnostics). Nothing here touches the disk or ROS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..core.camera import ImageTransform, PinholeCamera
from ..core.estimator import Detection

__all__ = ["CollectorConfig", "Rejection", "REASONS", "StampRateLimiter", "JointNovelty", "sharpness",
           "check_sharpness", "detection_quality", "check_detection", "mask_fraction"]

#: Reason tags of rejected frames, in the order the collector checks them.
REASONS = (
    "max_samples",  # the collection holds max_samples samples
    "quota",  # the disk quota is used up
    "rate",  # a sample was saved less than 1 / max_rate_hz ago (image-stamp time)
    "no_camera_info",  # no usable camera_info yet
    "joint_states",  # joint positions unknown at the image stamp (missing, stale, gapped)
    "not_novel",  # too close in joint space to a saved sample
    "bad_image",  # the image cannot be decoded
    "camera_mismatch",  # image size differs from camera_info's
    "blurry",  # sharpness below min_sharpness
    "low_confidence",  # model: median keypoint confidence below min_confidence
    "small_mask",  # model: predicted robot mask covers too little of the image
    "write_error",  # the disk refused the write (full, read-only...); nothing was saved
)


@dataclass(frozen=True)
class CollectorConfig:
    """What makes a frame worth saving (see the module docstring)."""

    min_joint_distance: float = 0.1  # rad (L2 over the keypoints' joints): nearer to a saved sample -> not novel
    min_sharpness: float = 10.0  # variance of the Laplacian, 8-bit grey levels^2, at sharpness_width; below: blurry
    sharpness_width: int = 320  # wider images are downscaled (area) to this width before measuring; 0: native size
    min_confidence: float = 0.5  # with a model: the median keypoint confidence must reach this
    min_mask_fraction: float = 0.01  # with a mask model: the robot (p > 0.5) must cover more than this image fraction
    max_rate_hz: float = 2.0  # at most this many saves per second of image-stamp time; 0: no rate limit

    def __post_init__(self):
        problems = []
        for name in ("min_joint_distance", "min_sharpness", "max_rate_hz"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0.0):
                problems.append(f"{name} must be finite and >= 0, got {v}")
        for name in ("min_confidence", "min_mask_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                problems.append(f"{name} must lie in [0, 1], got {v}")
        if int(self.sharpness_width) < 0:
            problems.append(f"sharpness_width must be >= 0, got {self.sharpness_width}")
        if problems:
            raise ValueError("invalid CollectorConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class Rejection:
    """Why a frame was not saved."""

    reason: str  # one of REASONS
    detail: str  # a sentence for logs and diagnostics


# --------------------------------------------------------------------------------------------
# Rate
# --------------------------------------------------------------------------------------------
class StampRateLimiter:
    """At most ``max_rate_hz`` saves per second of image-stamp time (0: unlimited).

    A stamp *before* the last save means the clock restarted (a bag replayed again, sim time reset):
    the limiter starts over from it rather than refusing everything until the old time comes back.
    """

    def __init__(self, max_rate_hz: float, *, last_saved_ns: int | None = None):
        self.min_interval_ns = int(round(1e9 / max_rate_hz)) if max_rate_hz > 0 else 0
        self.last_saved_ns = last_saved_ns

    def check(self, stamp_ns: int) -> Rejection | None:
        if self.min_interval_ns == 0 or self.last_saved_ns is None or stamp_ns < self.last_saved_ns:
            return None
        dt_ns = stamp_ns - self.last_saved_ns
        if dt_ns < self.min_interval_ns:
            return Rejection("rate", f"{dt_ns / 1e6:.0f} ms after the last saved sample; the rate limit allows one "
                                     f"every {self.min_interval_ns / 1e6:.0f} ms")
        return None

    def record(self, stamp_ns: int) -> None:
        """A sample stamped ``stamp_ns`` was saved."""
        self.last_saved_ns = int(stamp_ns)


# --------------------------------------------------------------------------------------------
# Joint-space novelty
# --------------------------------------------------------------------------------------------
class JointNovelty:
    """The saved samples' joint vectors and the nearest-neighbour distance of a new one.

    Args:
        joint_names: the joints compared (the keypoints' joints, in a fixed order).
        min_distance: L2 distance (rad; m for prismatic joints) a new vector must keep from every saved one.
    """

    def __init__(self, joint_names: Sequence[str], min_distance: float):
        self.joint_names = list(joint_names)
        self.min_distance = float(min_distance)
        self._q = np.empty((64, len(self.joint_names)))  # (capacity, J); rows [:n] are the saved vectors
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def vector(self, positions) -> np.ndarray | None:
        """``{joint: position}`` -> (J,) vector in :attr:`joint_names` order, or None if a joint is missing."""
        try:
            q = np.array([float(positions[j]) for j in self.joint_names])
        except KeyError:
            return None
        return q if np.all(np.isfinite(q)) else None

    def add(self, q) -> None:
        """Record the (J,) joint vector of a saved sample."""
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (len(self.joint_names),):
            raise ValueError(f"joint vector must have {len(self.joint_names)} entries, got {q.shape}")
        if self._n == len(self._q):
            self._q = np.concatenate([self._q, np.empty_like(self._q)])
        self._q[self._n] = q
        self._n += 1

    def nearest_distance(self, q) -> float:
        """L2 distance from (J,) ``q`` to the nearest saved vector; inf when nothing is saved."""
        if self._n == 0:
            return math.inf
        d = self._q[: self._n] - np.asarray(q, dtype=np.float64)[None, :]
        return float(np.sqrt(np.min(np.einsum("ij,ij->i", d, d))))

    def check(self, q) -> tuple[float, Rejection | None]:
        """(distance to the nearest saved sample, rejection if it is below ``min_distance``)."""
        dist = self.nearest_distance(q)
        if dist < self.min_distance:
            return dist, Rejection("not_novel", f"joint-space distance {dist:.3f} rad to the nearest of {self._n} "
                                                f"saved samples is below {self.min_distance:g} rad")
        return dist, None


# --------------------------------------------------------------------------------------------
# Sharpness
# --------------------------------------------------------------------------------------------
def sharpness(image_rgb: np.ndarray, *, width: int = 320) -> float:
    """Variance of the Laplacian of the grey image (8-bit levels squared); higher is sharper.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        width: an image wider than this is first downscaled (area averaging) to this width, keeping the
            aspect ratio, so that one threshold fits every camera resolution; 0 measures at native size.
            Narrower images are measured as they are (never upscaled).

    Measured on the project's simulated 640x480 bags at width 320: frames of the ``train`` preset give
    170-900, those of the ``shifted`` preset (strong blur, noise and JPEG) 17-330; a Gaussian blur of
    sigma 4 px (at 640 px) brings any of them below 8, sigma 8 px below 2.5. Hence the default
    threshold of 10: it passes every simulated frame and rejects a heavily blurred one.
    """
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    if width and w > width:
        grey = cv2.resize(grey, (int(width), max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def check_sharpness(value: float, config: CollectorConfig) -> Rejection | None:
    if not value >= config.min_sharpness:
        return Rejection("blurry", f"sharpness {value:.1f} (variance of the Laplacian at {config.sharpness_width} px "
                                   f"width) is below {config.min_sharpness:g}")
    return None


# --------------------------------------------------------------------------------------------
# Robot in view (with a model)
# --------------------------------------------------------------------------------------------
def mask_fraction(mask: np.ndarray, transform: ImageTransform, camera: PinholeCamera) -> float:
    """Fraction of the camera image that a robot mask (probability > 0.5) covers.

    Args:
        mask: (h, w) robot probability over the detector input, at any resolution (e.g. a quarter).
        transform: camera image -> detector input (the letterbox).
        camera: the camera image's model (its size).
    Only the part of the mask that shows the camera image counts, not the letterbox padding.
    """
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty (h, w) array, got shape {m.shape}")
    mh, mw = m.shape
    sx, sy = mw / transform.out_width, mh / transform.out_height
    # camera pixel edges [-0.5, W - 0.5] -> detector-input pixel edges (+0.5) -> mask pixels
    x0 = (transform.a_x * -0.5 + transform.b_x + 0.5) * sx
    x1 = (transform.a_x * (camera.width - 0.5) + transform.b_x + 0.5) * sx
    y0 = (transform.a_y * -0.5 + transform.b_y + 0.5) * sy
    y1 = (transform.a_y * (camera.height - 0.5) + transform.b_y + 0.5) * sy
    c0, c1 = max(0, int(round(x0))), min(mw, int(round(x1)))
    r0, r1 = max(0, int(round(y0))), min(mh, int(round(y1)))
    region = m[r0:r1, c0:c1] if (r1 > r0 and c1 > c0) else m
    return float(np.mean(region > 0.5))


def detection_quality(detection: Detection, transform: ImageTransform,
                      camera: PinholeCamera) -> tuple[float, float | None]:
    """(median keypoint confidence, mask fraction or None when the model has no mask) of one detection."""
    conf = np.asarray(detection.confidence, dtype=np.float64).reshape(-1)
    conf = conf[np.isfinite(conf)]
    median = float(np.median(conf)) if conf.size else 0.0
    frac = None if detection.mask is None else mask_fraction(detection.mask, transform, camera)
    return median, frac


def check_detection(confidence: float, fraction: float | None, config: CollectorConfig) -> Rejection | None:
    if not confidence >= config.min_confidence:
        return Rejection("low_confidence", f"median keypoint confidence {confidence:.2f} is below "
                                           f"{config.min_confidence:g}: the robot is out of view, occluded or not "
                                           f"recognised")
    if fraction is not None and not fraction > config.min_mask_fraction:
        return Rejection("small_mask", f"the predicted robot mask covers {fraction * 100:.1f} % of the image, not "
                                       f"more than {config.min_mask_fraction * 100:g} %")
    return None
