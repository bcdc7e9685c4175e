"""Decoding of sensor_msgs *fields* into numpy/core types, without importing any message package.

The functions are duck-typed on the message fields (``encoding``, ``height``, ``data``, ...), so the
same code serves live rclpy messages in the node and rosbags-deserialised messages in evaluation:
there is exactly one image decoder and one CameraInfo reader in the project.
"""

from __future__ import annotations

import cv2
import numpy as np

from .camera import PinholeCamera

__all__ = [
    "ImageEncodingError",
    "SUPPORTED_IMAGE_ENCODINGS",
    "image_msg_to_rgb",
    "compressed_image_msg_to_rgb",
    "camera_info_msg_to_camera",
    "joint_state_msg_to_positions",
    "stamp_to_ns",
]

#: encoding -> (channels, OpenCV conversion to RGB or None when it already is RGB)
_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}
SUPPORTED_IMAGE_ENCODINGS = tuple(_ENCODINGS)


class ImageEncodingError(ValueError):
    """An image message that cannot be turned into RGB (encoding, size or data inconsistent)."""


def image_msg_to_rgb(msg) -> np.ndarray:
    """A ``sensor_msgs/Image`` -> (H, W, 3) uint8 RGB array (a copy).

    Handles rgb8, bgr8, rgba8, bgra8 (alpha dropped) and mono8 (replicated to three channels),
    including rows padded beyond ``width * channels`` bytes (``step``).

    Raises:
        ImageEncodingError: any other encoding, or ``step``/``data`` inconsistent with the size.
    """
    encoding = str(msg.encoding).lower()
    if encoding not in _ENCODINGS:
        raise ImageEncodingError(f"unsupported image encoding {msg.encoding!r}; supported: "
                                 f"{', '.join(SUPPORTED_IMAGE_ENCODINGS)}")
    channels, code = _ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"image size must be positive, got {width}x{height}")
    if step < width * channels:
        raise ImageEncodingError(f"image step {step} is smaller than width * channels = {width * channels}")
    data = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if data.size < step * height:
        raise ImageEncodingError(f"image data has {data.size} bytes, expected step * height = {step * height}")
    rows = data[: step * height].reshape(height, step)[:, : width * channels].reshape(height, width, channels)
    if code is None:
        return rows.copy()  # rgb8: rows may be a strided view into the message; always hand out our own array
    # OpenCV's channel conversions, not numpy fancy indexing: ~0.1 ms instead of ~4 ms at 640x480.
    return cv2.cvtColor(rows[..., 0] if channels == 1 else rows, code)


def compressed_image_msg_to_rgb(msg) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (jpeg/png) -> (H, W, 3) uint8 RGB array."""
    buf = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise ImageEncodingError(f"cannot decode compressed image (format {getattr(msg, 'format', '?')!r}, "
                                 f"{buf.size} bytes)")
    return np.ascontiguousarray(img[..., ::-1])


def camera_info_msg_to_camera(msg) -> PinholeCamera:
    """A ``sensor_msgs/CameraInfo`` -> :class:`PinholeCamera` (K, D, size, distortion model) of the raw image.

    Raises:
        CameraModelError: uncalibrated (K all zeros), bad size or unsupported distortion model.
    """
    return PinholeCamera.from_camera_info_fields(k=np.asarray(msg.k, dtype=np.float64),
                                                 d=np.asarray(msg.d, dtype=np.float64), width=int(msg.width),
                                                 height=int(msg.height), distortion_model=str(msg.distortion_model))


def joint_state_msg_to_positions(msg) -> dict[str, float]:
    """A ``sensor_msgs/JointState`` -> ``{joint name: position}`` (radians / metres); NaNs are kept.

    Raises:
        ValueError: names and positions differ in length.
    """
    names, positions = list(msg.name), np.asarray(msg.position, dtype=np.float64)
    if len(names) != len(positions):
        raise ValueError(f"JointState has {len(names)} names but {len(positions)} positions")
    return dict(zip(names, positions.tolist()))


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` (sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
