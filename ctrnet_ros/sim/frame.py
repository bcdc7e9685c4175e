"""What one synthetic frame carries: the image and its exact ground truth.

Shared by the renderer (``sim/render.py``), the dataset writer and the rosbag writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..core.camera import PinholeCamera

__all__ = ["RenderedFrame", "Renderer"]


@dataclass
class RenderedFrame:
    """A rendered image with exact ground truth. Shapes use H, W = camera.height, camera.width; K keypoints."""

    rgb: np.ndarray  # (H, W, 3) uint8, RGB order
    mask: np.ndarray  # (H, W) bool, True on robot pixels
    link_labels: np.ndarray  # (H, W) int16, index into ``link_names`` per pixel, -1 elsewhere
    link_names: list[str]  # URDF link names for the label indices
    camera: PinholeCamera  # intrinsics the image was rendered with
    T_camera_base: np.ndarray  # (4, 4) base frame -> camera optical frame, metres
    joint_positions: dict[str, float]  # joint name -> position (radians / metres)
    keypoints_base: np.ndarray  # (K, 3) metres, base frame
    keypoints_camera: np.ndarray  # (K, 3) metres, camera optical frame
    keypoints_uv: np.ndarray  # (K, 2) pixels, OpenCV convention (pixel centres at integers)
    in_image: np.ndarray  # (K,) bool: projects inside the image and lies in front of the camera
    visible: np.ndarray  # (K,) bool: in_image and not occluded (by the robot itself or distractors)


class Renderer(Protocol):
    """Anything that renders the robot at joint positions from a camera pose."""

    def render(self, joint_positions: dict[str, float], T_camera_base: np.ndarray,
               camera: PinholeCamera) -> RenderedFrame: ...
