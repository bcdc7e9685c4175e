"""Pinhole camera built from CameraInfo-like fields, and image transforms that keep it consistent.

Pixel convention (OpenCV's, and sensor_msgs/CameraInfo's): the *centre* of the top-left pixel
is at (u, v) = (0, 0); the image spans [-0.5, W - 0.5] x [-0.5, H - 0.5].

Resizing an image of width W to W' maps a coordinate as ``u' = (u + 0.5) * W'/W - 0.5``;
cropping at x0 maps ``u' = u - x0``. Both are per-axis affine maps ``u' = a u + b``, so they
compose, and the intrinsics follow with ``K' = A K`` where ``A = [[a_x, 0, b_x], [0, a_y, b_y], [0, 0, 1]]``.
Distortion coefficients act on normalised coordinates and are unchanged by either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["CameraModelError", "PinholeCamera", "ImageTransform", "SUPPORTED_DISTORTION_MODELS"]

#: CameraInfo distortion models we can project with. "" is treated as no distortion.
SUPPORTED_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "")


class CameraModelError(ValueError):
    """A camera description that cannot be used (bad K, unknown distortion model, bad size)."""


@dataclass(frozen=True)
class ImageTransform:
    """Per-axis affine pixel map ``u_out = a_x * u_in + b_x``, ``v_out = a_y * v_in + b_y``.

    Built by :meth:`PinholeCamera.resized` / :meth:`PinholeCamera.cropped`; apply it to images,
    pixel coordinates and intrinsics alike so they never drift apart.
    """

    a_x: float
    b_x: float
    a_y: float
    b_y: float
    out_width: int
    out_height: int

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) homogeneous pixel map."""
        return np.array([[self.a_x, 0.0, self.b_x], [0.0, self.a_y, self.b_y], [0.0, 0.0, 1.0]])

    def apply_coords(self, uv) -> np.ndarray:
        """(N, 2) input-image pixels -> (N, 2) output-image pixels."""
        uv = np.asarray(uv, dtype=np.float64)
        return np.stack([uv[..., 0] * self.a_x + self.b_x, uv[..., 1] * self.a_y + self.b_y], axis=-1)

    def invert_coords(self, uv) -> np.ndarray:
        """(N, 2) output-image pixels -> (N, 2) input-image pixels."""
        uv = np.asarray(uv, dtype=np.float64)
        return np.stack([(uv[..., 0] - self.b_x) / self.a_x, (uv[..., 1] - self.b_y) / self.a_y], axis=-1)

    def scale_intrinsics(self, K) -> np.ndarray:
        """(3, 3) intrinsics of the input image -> intrinsics of the output image."""
        return self.matrix @ np.asarray(K, dtype=np.float64)

    def then(self, other: "ImageTransform") -> "ImageTransform":
        """Composition: first ``self``, then ``other``."""
        return ImageTransform(
            a_x=other.a_x * self.a_x,
            b_x=other.a_x * self.b_x + other.b_x,
            a_y=other.a_y * self.a_y,
            b_y=other.a_y * self.b_y + other.b_y,
            out_width=other.out_width,
            out_height=other.out_height,
        )

    def apply_image(self, image: np.ndarray, *, interpolation: int | None = None) -> np.ndarray:
        """Warp an (H, W[, C]) image into the (out_height, out_width[, C]) output image."""
        in_h, in_w = image.shape[:2]
        is_pure_resize = np.isclose(self.a_x, self.out_width / in_w) and np.isclose(
            self.b_x, 0.5 * self.a_x - 0.5
        ) and np.isclose(self.a_y, self.out_height / in_h) and np.isclose(self.b_y, 0.5 * self.a_y - 0.5)
        if is_pure_resize:
            if interpolation is None:
                shrinking = self.out_width < in_w
                interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            return cv2.resize(image, (self.out_width, self.out_height), interpolation=interpolation)
        is_pure_crop = self.a_x == 1.0 and self.a_y == 1.0 and float(self.b_x).is_integer() and float(self.b_y).is_integer()
        if is_pure_crop and -self.b_x >= 0 and -self.b_y >= 0 and -self.b_x + self.out_width <= in_w and -self.b_y + self.out_height <= in_h:
            x0, y0 = int(-self.b_x), int(-self.b_y)
            return image[y0 : y0 + self.out_height, x0 : x0 + self.out_width].copy()
        M = self.matrix[:2]
        return cv2.warpAffine(
            image,
            M,
            (self.out_width, self.out_height),
            flags=cv2.INTER_LINEAR if interpolation is None else interpolation,
            borderMode=cv2.BORDER_CONSTANT,
        )


@dataclass(frozen=True)
class PinholeCamera:
    """A calibrated pinhole camera, as sensor_msgs/CameraInfo describes the *raw* image.

    Attributes:
        K: (3, 3) intrinsic matrix, pixels.
        D: (N,) distortion coefficients for ``distortion_model`` (empty for none).
        width, height: image size in pixels.
        distortion_model: "plumb_bob", "rational_polynomial", "equidistant", or "" (none).
    """

    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    width: int = 0
    height: int = 0
    distortion_model: str = "plumb_bob"

    def __post_init__(self):
        K = np.asarray(self.K, dtype=np.float64)
        D = np.asarray(self.D, dtype=np.float64).reshape(-1)
        if K.shape != (3, 3):
            raise CameraModelError(f"K must be 3x3, got shape {K.shape}")
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1.0) > 1e-9:
            raise CameraModelError(f"K is not a valid intrinsic matrix (fx, fy > 0, K[2,2] = 1): {K.tolist()}")
        if not np.all(np.isfinite(D)):
            raise CameraModelError(f"distortion coefficients contain NaN/inf: {D.tolist()}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise CameraModelError(f"image size must be positive, got {self.width}x{self.height}")
        if self.distortion_model not in SUPPORTED_DISTORTION_MODELS:
            raise CameraModelError(
                f"unsupported distortion model {self.distortion_model!r}; supported: {SUPPORTED_DISTORTION_MODELS}"
            )
        if self.distortion_model == "equidistant" and D.size not in (0, 4):
            raise CameraModelError(f"equidistant distortion needs 4 coefficients, got {D.size}")
        K.setflags(write=False)
        D.setflags(write=False)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", D)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_camera_info_fields(cls, *, k, d, width: int, height: int, distortion_model: str = "plumb_bob"):
        """From CameraInfo's row-major ``k`` (9,), ``d``, ``width``, ``height``, ``distortion_model``."""
        k = np.asarray(k, dtype=np.float64)
        if k.size != 9:
            raise CameraModelError(f"camera_info k must have 9 entries, got {k.size}")
        if np.allclose(k, 0.0):
            raise CameraModelError("camera_info k is all zeros: the camera is uncalibrated")
        return cls(K=k.reshape(3, 3), D=np.asarray(d, dtype=np.float64), width=width, height=height,
                   distortion_model=distortion_model or "")

    @classmethod
    def from_fov(cls, *, width: int, height: int, fovy_deg: float):
        """Ideal camera with square pixels and the principal point at the image centre."""
        f = (height / 2.0) / np.tan(np.radians(fovy_deg) / 2.0)
        K = np.array([[f, 0.0, width / 2.0 - 0.5], [0.0, f, height / 2.0 - 0.5], [0.0, 0.0, 1.0]])
        return cls(K=K, D=np.zeros(5), width=width, height=height, distortion_model="plumb_bob")

    # -- properties ---------------------------------------------------------------------------
    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    @property
    def has_distortion(self) -> bool:
        return self.D.size > 0 and bool(np.any(self.D != 0.0))

    @property
    def fovy_deg(self) -> float:
        """Vertical field of view in degrees (ignoring distortion and principal-point offset)."""
        return float(np.degrees(2.0 * np.arctan2(self.height / 2.0, self.K[1, 1])))

    # -- projection ---------------------------------------------------------------------------
    def project(self, points_camera) -> np.ndarray:
        """Project (N, 3) points in the optical frame (metres) to (N, 2) pixels, with distortion.

        Points at or behind the camera (z <= 0) give NaN pixels.
        """
        p = np.asarray(points_camera, dtype=np.float64).reshape(-1, 3)
        uv = np.full((len(p), 2), np.nan)
        front = p[:, 2] > 1e-9
        if np.any(front):
            obj = p[front].reshape(-1, 1, 3)
            zero = np.zeros(3)
            if self.distortion_model == "equidistant" and self.has_distortion:
                out, _ = cv2.fisheye.projectPoints(obj, zero, zero, self.K, self.D.reshape(4, 1))
            else:
                out, _ = cv2.projectPoints(obj, zero, zero, self.K, self.D if self.has_distortion else None)
            uv[front] = out.reshape(-1, 2)
        return uv

    def project_from(self, T_camera_frame, points_frame) -> np.ndarray:
        """Project (N, 3) points given in some frame, through ``T_camera_frame`` (4, 4); (N, 2) pixels."""
        T = np.asarray(T_camera_frame, dtype=np.float64)
        p = np.asarray(points_frame, dtype=np.float64).reshape(-1, 3)
        return self.project(p @ T[:3, :3].T + T[:3, 3])

    def undistort_pixels(self, uv) -> np.ndarray:
        """(N, 2) distorted pixels -> (N, 2) pixels of the ideal (distortion-free) camera with the same K."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        if not self.has_distortion:
            return uv.copy()
        src = uv.reshape(-1, 1, 2)
        if self.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(src, self.K, self.D.reshape(4, 1), P=self.K)
        else:
            out = cv2.undistortPoints(src, self.K, self.D, P=self.K)
        return out.reshape(-1, 2)

    def in_image(self, uv, *, margin: float = 0.0) -> np.ndarray:
        """(N,) bool: pixel lies inside the image (shrunk by ``margin`` pixels on each side)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        with np.errstate(invalid="ignore"):
            return (
                (uv[:, 0] >= -0.5 + margin)
                & (uv[:, 0] <= self.width - 0.5 - margin)
                & (uv[:, 1] >= -0.5 + margin)
                & (uv[:, 1] <= self.height - 0.5 - margin)
            )

    # -- image transforms ---------------------------------------------------------------------
    def transformed(self, tf: ImageTransform) -> "PinholeCamera":
        """The camera that sees the image after ``tf`` is applied."""
        return PinholeCamera(K=tf.scale_intrinsics(self.K), D=self.D, width=tf.out_width,
                             height=tf.out_height, distortion_model=self.distortion_model)

    def resize_transform(self, width: int, height: int) -> ImageTransform:
        """Transform that resizes this camera's image to ``width`` x ``height`` pixels."""
        ax, ay = width / self.width, height / self.height
        return ImageTransform(a_x=ax, b_x=0.5 * ax - 0.5, a_y=ay, b_y=0.5 * ay - 0.5,
                              out_width=int(width), out_height=int(height))

    def crop_transform(self, x0: int, y0: int, width: int, height: int) -> ImageTransform:
        """Transform that crops the ``width`` x ``height`` window whose top-left pixel is (x0, y0)."""
        return ImageTransform(a_x=1.0, b_x=-float(x0), a_y=1.0, b_y=-float(y0),
                              out_width=int(width), out_height=int(height))

    def letterbox_transform(self, width: int, height: int) -> ImageTransform:
        """Uniform scale that fits this image inside ``width`` x ``height``, centred, padding the rest.

        Equal to :meth:`resize_transform` when the aspect ratios match (e.g. 640x480 -> 320x240).
        """
        s = min(width / self.width, height / self.height)
        pad_x = (width - s * self.width) / 2.0
        pad_y = (height - s * self.height) / 2.0
        return ImageTransform(a_x=s, b_x=0.5 * s - 0.5 + pad_x, a_y=s, b_y=0.5 * s - 0.5 + pad_y,
                              out_width=int(width), out_height=int(height))

    def resized(self, width: int, height: int) -> tuple["PinholeCamera", ImageTransform]:
        """(camera of the resized image, the transform to apply to images and pixels)."""
        tf = self.resize_transform(width, height)
        return self.transformed(tf), tf

    def cropped(self, x0: int, y0: int, width: int, height: int) -> tuple["PinholeCamera", ImageTransform]:
        """(camera of the cropped image, the transform to apply to images and pixels)."""
        tf = self.crop_transform(x0, y0, width, height)
        return self.transformed(tf), tf
