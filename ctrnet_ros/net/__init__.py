"""Torch networks for keypoint-based camera-to-robot calibration.

* :mod:`.resnet`: ResNet trunk (BasicBlock/Bottleneck, depth 18/34/50, width, stride 8/16/32).
* :mod:`.ctrnet`: :class:`CtRNetModel` -- keypoint heatmaps + robot mask (Lu et al., CVPR 2023).
* :mod:`.belief`: :class:`RobotJointModel` -- Heindl et al.'s multi-stage belief maps (no mask).
* :mod:`.decode`: heatmaps -> sub-pixel keypoints + confidence, coordinate maps, Gaussian targets.
* :mod:`.keypoint_net`: :class:`KeypointNet`, the common image -> keypoints/confidence/mask module.
* :mod:`.registry`: ``model_registry``, ``build_model``, ``save_checkpoint`` / ``load_checkpoint``.
* :mod:`.export`: ``export_onnx`` (single-file ONNX, dynamic batch, onnxruntime parity check);
  not imported here, so that using the networks does not require onnx.

Every model takes ``image`` ``(B, 3, H, W)`` float RGB in [0, 1]; normalisation is inside.
"""

from .belief import BeliefMapConfig, RobotJointModel
from .ctrnet import CtRNetConfig, CtRNetModel
from .decode import (
    decode_heatmaps,
    heatmap_to_input_coords,
    input_to_heatmap_coords,
    peak_sharpness,
    render_gaussian_heatmaps,
    soft_argmax_2d,
)
from .keypoint_net import INPUT_NAME, OUTPUT_NAMES, KeypointNet
from .registry import ModelFileError, build_model, load_checkpoint, model_registry, save_checkpoint
from .resnet import ResNetTrunk

__all__ = [
    "BeliefMapConfig",
    "RobotJointModel",
    "CtRNetConfig",
    "CtRNetModel",
    "ResNetTrunk",
    "KeypointNet",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "decode_heatmaps",
    "soft_argmax_2d",
    "peak_sharpness",
    "heatmap_to_input_coords",
    "input_to_heatmap_coords",
    "render_gaussian_heatmaps",
    "ModelFileError",
    "model_registry",
    "build_model",
    "save_checkpoint",
    "load_checkpoint",
]
