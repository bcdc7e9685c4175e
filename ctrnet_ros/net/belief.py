"""Heindl et al.'s multi-stage belief-map network ("3D Robot Pose Estimation from 2D Images").

Reproduces the published ``RobotJointModel`` layer listing (the authors released the architecture,
not code), generalised from 7 joints to K keypoints:

    image (B, 3, H, W) RGB in [0, 1]
      features: Normalize, VGG-style 3x3 convs 3->64->64, max-pool, 64->128->128, max-pool, 128->256
                                                  (B, 256, H/4, W/4)     (convs with bias, ReLU, no BN)
      stage 0:  3 x [3x3 conv 256/128->128, BN, ReLU], 1x1 128->512, ReLU, 1x1 512->K, Sigmoid
      stage t:  input features ⊕ beliefs_{t-1}  (256 + K channels)
                5 x [7x7 conv ->128, BN, ReLU], 1x1 128->512, ReLU, 1x1 512->K, Sigmoid     (t = 1..5)
                                                  (B, K, H/4, W/4)       per stage

Module names follow the listing (``features.1.0.weight``, ``stages.3.12.running_var``, ...).
With the defaults and K = 7 the parameter count is exactly the listing's, 25,874,154.

This model has **no mask head**: its outputs are belief maps only. Anything downstream (the
estimator, the inference backends) must therefore treat the robot mask as optional;
:class:`~ctrnet_ros.net.keypoint_net.KeypointNet` reports ``has_mask = False`` and emits a zero mask
for it, so that the exported ONNX graphs of all models have the same outputs.

Unlike :class:`~ctrnet_ros.net.ctrnet.CtRNetModel`, the heatmaps are already probabilities (the
listing ends each stage in a Sigmoid); train them against
:func:`~ctrnet_ros.net.decode.render_gaussian_heatmaps` targets, with every stage supervised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._dataclass_fields import coerce_tuple_field
from .normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize

__all__ = ["BeliefMapConfig", "RobotJointModel"]


@dataclass(frozen=True)
class BeliefMapConfig:
    """Architecture of :class:`RobotJointModel`; the defaults are Heindl et al.'s listing (at K = 7)."""

    num_keypoints: int = 7  # K: one belief map per keypoint, in the order of the robot YAML's list
    input_size: tuple[int, int] = (320, 240)  # nominal network input (W, H) in pixels; both divisible by 4
    vgg_channels: tuple[int, int, int] = (64, 128, 256)  # widths of the three VGG blocks (2, 2, 1 convs)
    stage_channels: int = 128  # channels of the 3x3 / 7x7 convs inside every stage
    stage_hidden_channels: int = 512  # channels of each stage's 1x1 layer before the 1x1 to K
    num_stages: int = 6  # stage 0 plus (num_stages - 1) refinement stages
    stage0_convs: int = 3  # 3x3 conv+BN+ReLU layers in stage 0
    refine_convs: int = 5  # conv+BN+ReLU layers in each refinement stage
    refine_kernel: int = 7  # kernel size of the refinement stages' convs (odd)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB mean subtracted inside the graph (image in [0, 1])
    std: tuple[float, float, float] = IMAGENET_STD  # RGB std divided inside the graph

    heatmap_stride = 4  # two 2x2 max-pools; not configurable (a class constant, not a field)

    def __post_init__(self):
        coerce_tuple_field(self, "input_size", 2, int)
        coerce_tuple_field(self, "vgg_channels", 3, int)
        coerce_tuple_field(self, "mean", 3, float)
        coerce_tuple_field(self, "std", 3, float)
        if self.num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {self.num_keypoints}")
        if min(self.vgg_channels) < 1 or self.stage_channels < 1 or self.stage_hidden_channels < 1:
            raise ValueError("channel counts must be >= 1")
        if self.num_stages < 1 or self.stage0_convs < 1 or self.refine_convs < 1:
            raise ValueError("num_stages, stage0_convs and refine_convs must be >= 1")
        if self.refine_kernel < 1 or self.refine_kernel % 2 == 0:
            raise ValueError(f"refine_kernel must be odd, got {self.refine_kernel}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be > 0, got {self.std}")
        w, h = self.input_size
        if w % 4 or h % 4 or w <= 0 or h <= 0:
            raise ValueError(f"input_size {self.input_size} must be positive multiples of 4")

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(W, H) of the belief maps for the nominal ``input_size``."""
        return self.input_size[0] // 4, self.input_size[1] // 4


def _stage(in_channels: int, num_convs: int, kernel: int, channels: int, hidden: int, k: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, kernel, padding=kernel // 2, bias=False),
                   nn.BatchNorm2d(channels), nn.ReLU()]
    layers += [nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, k, 1), nn.Sigmoid()]
    return nn.Sequential(*layers)


class RobotJointModel(nn.Module):
    """Multi-stage belief maps: ``(B, 3, H, W)`` RGB in [0, 1] -> K keypoint belief maps at stride 4.

    ``forward(image)`` (H, W multiples of 4) returns a dict:

    * ``heatmaps``: ``(B, K, H/4, W/4)`` the last stage's belief maps, probabilities in [0, 1].
    * ``beliefs``: list of ``num_stages`` tensors ``(B, K, H/4, W/4)``, one per stage, for
      intermediate supervision (``beliefs[-1] is heatmaps``).

    There is no ``mask_logits``: this model has no segmentation head.
    """

    heatmaps_are_logits = False  # stages end in a Sigmoid
    has_mask_head = False

    def __init__(self, config: BeliefMapConfig):
        super().__init__()
        self.config = config
        self.num_keypoints = config.num_keypoints
        self.heatmap_stride = BeliefMapConfig.heatmap_stride
        c1, c2, c3 = config.vgg_channels
        self.features = nn.Sequential(
            Normalize(config.mean, config.std),
            nn.Sequential(
                nn.Conv2d(3, c1, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(2, 2),
                nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(2, 2),
                nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            ),
        )
        k, ch, hidden = config.num_keypoints, config.stage_channels, config.stage_hidden_channels
        stages = [_stage(c3, config.stage0_convs, 3, ch, hidden, k)]
        stages += [_stage(c3 + k, config.refine_convs, config.refine_kernel, ch, hidden, k)
                   for _ in range(1, config.num_stages)]
        self.stages = nn.ModuleList(stages)

    def forward(self, image: torch.Tensor) -> dict:
        """``(B, 3, H, W)`` in [0, 1] -> ``{"heatmaps": (B, K, H/4, W/4), "beliefs": [(B, K, H/4, W/4)] * S}``."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"expected image of shape (B, 3, H, W), got {tuple(image.shape)}")
        if image.shape[-2] % 4 or image.shape[-1] % 4:
            raise ValueError(f"image H, W = {tuple(image.shape[-2:])} must be multiples of 4")
        features = self.features(image)  # (B, 256, H/4, W/4)
        belief = self.stages[0](features)  # (B, K, H/4, W/4)
        beliefs = [belief]
        for stage in self.stages[1:]:
            belief = stage(torch.cat([features, belief], dim=1))  # input (B, 256 + K, H/4, W/4)
            beliefs.append(belief)
        return {"heatmaps": belief, "beliefs": beliefs}
