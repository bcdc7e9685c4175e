"""The ``~/overlay`` debug image: what the network saw and how well the published pose explains it.

Drawn on the camera image (pixels of the raw image, OpenCV convention):

* detected keypoints: filled green circles (grey when below ``min_confidence``), with their names;
* model keypoints (forward kinematics at the image stamp) projected under the *published* pose:
  red crosses, joined to their detection by a thin line, so a bad calibration shows as long lines;
* the robot mask's outline (yellow), if the model has a mask output;
* one status line at the top.

Pure numpy/OpenCV: no message types here; the node renders only while someone subscribes.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..core.camera import ImageTransform

__all__ = ["render_overlay", "mask_to_image"]

_GREEN, _GREY, _RED, _YELLOW, _WHITE = (40, 220, 40), (150, 150, 150), (235, 40, 40), (250, 220, 0), (255, 255, 255)


def mask_to_image(mask: np.ndarray, input_transform: ImageTransform, width: int, height: int) -> np.ndarray:
    """Robot probability in the detector's input frame -> (height, width) float32 in the camera image.

    ``mask`` may have any resolution covering the detector input (e.g. the heatmap stride); it is
    first resized to the input size, then warped back through the inverse letterbox transform.
    """
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim == 3:
        m = m[0]
    m = cv2.resize(m, (input_transform.out_width, input_transform.out_height), interpolation=cv2.INTER_LINEAR)
    inv = np.linalg.inv(input_transform.matrix)[:2]
    return cv2.warpAffine(m, inv, (int(width), int(height)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def render_overlay(rgb: np.ndarray, *, keypoints_uv: np.ndarray | None = None, confidence: np.ndarray | None = None,
                   names: Sequence[str] | None = None, min_confidence: float = 0.3,
                   model_uv: np.ndarray | None = None, mask: np.ndarray | None = None,
                   input_transform: ImageTransform | None = None, status: str = "") -> np.ndarray:
    """(H, W, 3) uint8 RGB with the debug drawing (a new array).

    Args:
        keypoints_uv: (K, 2) detected keypoints, camera-image pixels (NaN = none).
        confidence: (K,) their confidences.
        names: (K,) keypoint names, drawn beside the detections.
        model_uv: (K, 2) model keypoints projected under the published pose, pixels.
        mask: robot probability in the detector input frame, with ``input_transform`` (camera -> input).
        status: one line of text drawn at the top.
    """
    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    scale = max(0.35, min(w, h) / 960.0)
    if mask is not None and input_transform is not None:
        m = mask_to_image(mask, input_transform, w, h) >= 0.5
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, _YELLOW, 2, cv2.LINE_AA)

    def pt(p):
        return int(round(float(p[0]))), int(round(float(p[1])))

    def finite(p):
        return p is not None and np.all(np.isfinite(p)) and abs(p[0]) < 1e5 and abs(p[1]) < 1e5

    det = None if keypoints_uv is None else np.asarray(keypoints_uv, dtype=np.float64)
    mod = None if model_uv is None else np.asarray(model_uv, dtype=np.float64)
    if det is not None and mod is not None and len(det) == len(mod):
        for a, b in zip(det, mod):
            if finite(a) and finite(b):
                cv2.line(out, pt(a), pt(b), _WHITE, 1, cv2.LINE_AA)
    if mod is not None:
        for p in mod:
            if finite(p):
                cv2.drawMarker(out, pt(p), _RED, cv2.MARKER_CROSS, int(14 * scale + 6), 2, cv2.LINE_AA)
    if det is not None:
        conf = np.ones(len(det)) if confidence is None else np.asarray(confidence, dtype=np.float64)
        for i, p in enumerate(det):
            if not finite(p):
                continue
            colour = _GREEN if conf[i] >= min_confidence else _GREY
            cv2.circle(out, pt(p), int(5 * scale + 2), colour, -1, cv2.LINE_AA)
            if names is not None and i < len(names):
                cv2.putText(out, str(names[i]), (pt(p)[0] + 6, pt(p)[1] - 6), cv2.FONT_HERSHEY_SIMPLEX,
                            0.4 * scale + 0.1, colour, 1, cv2.LINE_AA)
    if status:
        cv2.putText(out, status, (8, int(22 * scale + 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale + 0.1, _WHITE, 2,
                    cv2.LINE_AA)
    return out
