"""Input normalisation as the first layer of every network, so that exported graphs include it.

Every model in :mod:`ctrnet_ros.net` takes ``image`` as float RGB in ``[0, 1]``, NCHW, and applies
``(image - mean) / std`` itself. The constants live in the model's config (and hence in its
checkpoint and ONNX metadata); they are *non-persistent* buffers, so they never appear in (or have
to match) a ``state_dict``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Normalize"]

#: Per-channel RGB statistics of ImageNet, for images scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(B, C, H, W)`` image in ``[0, 1]`` -> ``(image - mean) / std``, same shape.

    Args:
        mean: per-channel mean, length ``C``.
        std: per-channel standard deviation, length ``C``, all > 0.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} != {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be > 0, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={tuple(round(v, 4) for v in self.mean.flatten().tolist())}, " \
               f"std={tuple(round(v, 4) for v in self.std.flatten().tolist())}"
