"""One inference interface for every network: image in, keypoints + confidence + mask out.

:class:`KeypointNet` wraps a :class:`~ctrnet_ros.net.ctrnet.CtRNetModel` or a
:class:`~ctrnet_ros.net.belief.RobotJointModel` and adds heatmap decoding, so that the exported
ONNX graph (see :mod:`ctrnet_ros.net.export`) and the torch module have the same contract:

input ``image``: ``(B, 3, H, W)`` float32 RGB in [0, 1], NCHW (normalisation is inside)

======================  ==========================  ==============================================
output                  shape                       meaning
======================  ==========================  ==============================================
``keypoints``           ``(B, K, 2)``               (u, v) in *network-input* pixels, pixel-centre
                                                    convention (centre of the top-left pixel = 0, 0)
``confidence``          ``(B, K)``                  heatmap probability at the peak, in [0, 1]
``mask``                ``(B, 1, H/4, W/4)``        robot-mask probability at the heatmap stride;
                                                    **all zeros when** ``has_mask`` is False
``heatmaps``            ``(B, K, H/4, W/4)``        keypoint probabilities (sigmoid applied)
======================  ==========================  ==============================================

``forward`` stays differentiable (the quadratic and soft-argmax decoders are made of gathers and
arithmetic), so self-supervised training can backpropagate from keypoints through the network;
wrap inference calls in ``torch.inference_mode()``.

The output set is the same for all models so that backends need no per-model code; whether the
mask is real is a property of the model (``KeypointNet.has_mask``, and the ``has_mask`` entry of
the ONNX metadata), never to be guessed from the mask's values. The belief model has no mask head.
"""

from __future__ import annotations

import torch
from torch import nn

from .decode import DECODE_METHODS, decode_heatmaps, heatmap_to_input_coords

__all__ = ["KeypointNet", "OUTPUT_NAMES", "INPUT_NAME"]

INPUT_NAME = "image"
OUTPUT_NAMES = ("keypoints", "confidence", "mask", "heatmaps")


class KeypointNet(nn.Module):
    """Network + decoding: ``(B, 3, H, W)`` RGB in [0, 1] -> dict of :data:`OUTPUT_NAMES` (see module doc).

    Args:
        model: a model whose ``forward(image)`` returns ``{"heatmaps": (B, K, h, w), ["mask_logits"]}``
            and which has attributes ``num_keypoints``, ``heatmap_stride``, ``heatmaps_are_logits``,
            ``has_mask_head``.
        decode_method: one of :data:`~ctrnet_ros.net.decode.DECODE_METHODS`.
        beta: inverse temperature for ``"soft_argmax"``.
    """

    def __init__(self, model: nn.Module, *, decode_method: str = "quadratic", beta: float = 1.0):
        super().__init__()
        if decode_method not in DECODE_METHODS:
            raise ValueError(f"unknown decode method {decode_method!r}; choose one of {DECODE_METHODS}")
        self.model = model
        self.decode_method = decode_method
        self.beta = float(beta)
        self.num_keypoints = int(model.num_keypoints)
        self.heatmap_stride = int(model.heatmap_stride)
        self.has_mask = bool(model.has_mask_head)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` in [0, 1] -> keypoints (B, K, 2) input px, confidence (B, K), mask, heatmaps."""
        out = self.model(image)
        raw = out["heatmaps"]  # (B, K, H/4, W/4)
        logits = bool(self.model.heatmaps_are_logits)
        uv_hm, confidence = decode_heatmaps(raw, logits=logits, method=self.decode_method, beta=self.beta)
        keypoints = heatmap_to_input_coords(uv_hm, self.heatmap_stride)  # (B, K, 2)
        heatmaps = torch.sigmoid(raw) if logits else raw
        if self.has_mask:
            mask = torch.sigmoid(out["mask_logits"])  # (B, 1, H/4, W/4)
        else:
            mask = torch.zeros_like(heatmaps[:, :1])  # no mask head: see has_mask
        return {"keypoints": keypoints, "confidence": confidence, "mask": mask, "heatmaps": heatmaps}
