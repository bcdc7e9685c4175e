"""ResNet trunk (He et al., CVPR 2016) in plain torch, with DeepLab-style dilation.

There is no torchvision here (its compiled ops need a CUDA build of torch on these machines) and no
pretrained ImageNet weights offline, so the trunk is written out and trained from scratch.

Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H/s, W/s)`` with ``s = output_stride``.
Every strided layer is a 3x3 (or 7x7) convolution or 3x3 max-pool with "same" padding, so for sizes
not divisible by ``s`` the output is ``ceil(H/s) x ceil(W/s)``; the CtRNet model requires divisible
sizes, so that heatmap cells tile the input exactly.

Depths 18 and 34 use :class:`BasicBlock`, 50 uses :class:`Bottleneck` (ResNet v1.5: the stride sits
on the 3x3 convolution). ``base_channels`` is the width of the first stage (64 standard, 32 slim);
stage ``i`` has ``base_channels * 2**i * expansion`` output channels.

Output stride (the stem already reduces by 4; stages 2, 3, 4 halve once more each):

========  ======================================  =====================================
stride    ``dilate=True`` (DeepLab)               ``dilate=False`` (truncated)
========  ======================================  =====================================
32        all 4 stages, no dilation               all 4 stages
16        stage 4 at stride 1, dilation 2         stages 1-3 only (stage 4 dropped)
8         stages 3, 4 at stride 1, dilation 2, 4  stages 1-2 only
========  ======================================  =====================================
"""

from __future__ import annotations

from typing import Optional, Type, Union

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNetTrunk", "RESNET_LAYOUTS"]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with "same" padding (for stride 1), no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and an identity (or 1x1 projection) shortcut.

    ``(B, in_channels, H, W) -> (B, planes, H/stride, W/stride)``.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: Optional[int] = None,
        downsample: Optional[nn.Module] = None,
    ):
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.conv1 = conv3x3(in_channels, planes, stride, first_dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided/dilated), 1x1 expand by 4, and a shortcut.

    ``(B, in_channels, H, W) -> (B, 4 * planes, H/stride, W/stride)``.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        first_dilation: Optional[int] = None,
        downsample: Optional[nn.Module] = None,
    ):
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, first_dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


Block = Union[Type[BasicBlock], Type[Bottleneck]]

#: depth -> (block type, number of blocks per stage)
RESNET_LAYOUTS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}

_STAGE_STRIDES = (1, 2, 2, 2)  # stride of each stage's first block; the stem contributes 4
_VALID_OUTPUT_STRIDES = (8, 16, 32)


class ResNetTrunk(nn.Module):
    """ResNet feature extractor: ``(B, in_channels, H, W) -> (B, out_channels, H/s, W/s)``.

    Args:
        depth: 18, 34 or 50 (see :data:`RESNET_LAYOUTS`).
        base_channels: width of the first stage (64 standard, 32 for a slim CPU model).
        output_stride: ``s`` in 8, 16, 32.
        dilate: if True, keep all four stages and replace the strides beyond ``s`` with dilation
            (DeepLab); if False, drop the stages beyond ``s`` (cheaper, smaller receptive field).
        in_channels: channels of the input (3 for RGB; the input is expected already normalised).
        zero_init_residual: initialise the last BatchNorm of each residual branch to zero, so each
            block starts as the identity (Goyal et al. 2017), which helps training from scratch.

    Attributes:
        out_channels: channels of the output feature map.
        output_stride: ``s``.
    """

    def __init__(
        self,
        *,
        depth: int = 18,
        base_channels: int = 64,
        output_stride: int = 16,
        dilate: bool = True,
        in_channels: int = 3,
        zero_init_residual: bool = True,
    ):
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(RESNET_LAYOUTS)}")
        if output_stride not in _VALID_OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {_VALID_OUTPUT_STRIDES}, got {output_stride}")
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1, got {base_channels}")
        block, blocks_per_stage = RESNET_LAYOUTS[depth]
        self.depth = depth
        self.output_stride = output_stride

        # Stem: 7x7/2 convolution and 3x3/2 max-pool -> stride 4.
        self.conv1 = nn.Conv2d(in_channels, base_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        stride_so_far = 4
        dilation = 1
        channels = base_channels
        stages = []
        stage_strides: list[int] = []
        stage_channels: list[int] = []
        for i, (num_blocks, stage_stride) in enumerate(zip(blocks_per_stage, _STAGE_STRIDES)):
            first_dilation = dilation
            if stride_so_far * stage_stride > output_stride:
                if not dilate:
                    break
                dilation *= stage_stride  # DeepLab: trade the stride for dilation
                stage_stride = 1
            stride_so_far *= stage_stride
            planes = base_channels * 2**i
            stage, channels = self._make_stage(
                block, channels, planes, num_blocks, stride=stage_stride, dilation=dilation,
                first_dilation=first_dilation,
            )
            stages.append(stage)
            stage_strides.append(stride_so_far)
            stage_channels.append(channels)
        # Named layer1..layerN as in the paper and torchvision, so state-dict keys read familiarly.
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.num_stages = len(stages)
        self.out_channels = channels
        self.stage_strides = tuple(stage_strides)  # output stride of layer1..layerN
        self.stage_channels = tuple(stage_channels)  # output channels of layer1..layerN
        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_stage(
        block: Block, in_channels: int, planes: int, num_blocks: int, *, stride: int, dilation: int,
        first_dilation: int,
    ) -> tuple[nn.Sequential, int]:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
        layers = [block(in_channels, planes, stride=stride, dilation=dilation, first_dilation=first_dilation,
                        downsample=downsample)]
        layers += [block(out_channels, planes, dilation=dilation) for _ in range(1, num_blocks)]
        return nn.Sequential(*layers), out_channels

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output: ``[(B, stage_channels[i], H/stage_strides[i], W/stage_strides[i])]``.

        The last entry is :meth:`forward`'s result; the earlier, finer ones feed skip connections.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, base, H/4, W/4)
        outputs = []
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` normalised image -> ``(B, out_channels, H/s, W/s)`` features."""
        return self.forward_stages(x)[-1]
