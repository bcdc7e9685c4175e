"""CtRNet keypoint + segmentation network (Lu et al., CVPR 2023), with a configurable ResNet trunk.

The paper's network is a DeepLabv3 ResNet-50 at stride 8 whose features feed (a) one 4x4/2
deconvolution to K keypoint heatmaps at stride 4, decoded by a spatial soft-argmax, and (b) a
segmentation head whose robot mask is compared with a rendered silhouette for self-supervision.
This module keeps that structure but makes the trunk depth/width/stride and the upsampling head
configurable, so that a slim variant trains on CPU:

    image (B, 3, H, W) RGB in [0, 1]
      -> Normalize(mean, std)                                   (inside the graph)
      -> ResNetTrunk                       (B, C, H/s, W/s)      s = trunk_stride
      -> keypoint head: log2(s / 4) x [2x upsample, BN, ReLU], head_convs x [3x3, BN, ReLU], 1x1
                                           (B, K, H/4, W/4)      heatmap logits
      -> mask head:     3x3, BN, ReLU, 1x1, bilinear upsample
                                           (B, 1, H/4, W/4)      robot mask logits

With ``skip_connections`` (a U-Net/FPN-style decoder), each 2x upsampling of the keypoint head also
adds a 3x3 projection of the trunk stage at its new stride (stride 8: layer2, stride 4: layer1),
and the mask logits get a 3x3 correction computed from the stride-4 head features. The stride-16
trunk alone cannot place an edge or a peak to better than a few input pixels; the early stages can.
Every added layer starts at zero, so a model with skip connections starts exactly where its
warm-start checkpoint without them left off (:meth:`CtRNetModel.load_warm_start`).

Both outputs are at the *heatmap stride* (4 by default), not at full resolution: upsample the mask
with ``F.interpolate(..., mode="bilinear", align_corners=False)`` if a full-size mask is needed
(``align_corners=False`` is the same pixel-centre convention as :mod:`ctrnet_ros.net.decode`).

Heatmap logits are meant to be trained so that ``sigmoid(logits)`` matches Gaussian targets from
:func:`ctrnet_ros.net.decode.render_gaussian_heatmaps` (e.g. BCE-with-logits or MSE on the sigmoid),
which makes ``log(sigmoid(logits))`` locally quadratic and the decoder's sub-pixel fit exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._dataclass_fields import coerce_tuple_field
from .normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize
from .resnet import RESNET_LAYOUTS, ResNetTrunk

__all__ = ["CtRNetConfig", "CtRNetModel", "UPSAMPLE_MODES"]

UPSAMPLE_MODES = ("deconv", "bilinear")


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class CtRNetConfig:
    """Architecture of :class:`CtRNetModel`. Everything needed to rebuild it; stored in checkpoints."""

    num_keypoints: int = 7  # K: one heatmap per robot keypoint, in the order of the robot YAML's list
    input_size: tuple[int, int] = (320, 240)  # nominal network input (W, H) in pixels; both divisible by trunk_stride
    trunk_depth: int = 18  # ResNet depth: 18 or 34 (BasicBlock), 50 (Bottleneck)
    trunk_width: int = 64  # channels of the first ResNet stage: 64 standard, 32 slim; later stages double
    trunk_stride: int = 16  # output stride s of the trunk: 8, 16 or 32
    trunk_dilate: bool = True  # True: dilate the stages past s (DeepLab); False: drop them (cheaper)
    heatmap_stride: int = 4  # stride of heatmaps and mask: (H/4, W/4); trunk_stride / heatmap_stride = 2**n
    upsample_mode: str = "deconv"  # each 2x upsampling: "deconv" (4x4/2 transposed conv) or "bilinear" (+ 3x3 conv)
    head_channels: int = 128  # channels of the keypoint head's upsampling and 3x3 layers
    head_convs: int = 0  # extra 3x3 conv+BN+ReLU layers at the heatmap stride, before the 1x1 to K
    mask_head: bool = True  # robot segmentation branch on/off; off -> no "mask_logits" output
    mask_channels: int = 64  # hidden channels of the mask branch's 3x3 conv
    heatmap_prior: float = 0.01  # initial sigmoid(heatmap logit) everywhere (output bias init, as in focal loss)
    skip_connections: bool = False  # add zero-initialised laterals from the finer trunk stages (see module doc)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB mean subtracted inside the graph (image in [0, 1])
    std: tuple[float, float, float] = IMAGENET_STD  # RGB std divided inside the graph

    def __post_init__(self):
        coerce_tuple_field(self, "input_size", 2, int)
        coerce_tuple_field(self, "mean", 3, float)
        coerce_tuple_field(self, "std", 3, float)
        if self.num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {self.num_keypoints}")
        if self.trunk_depth not in RESNET_LAYOUTS:
            raise ValueError(f"trunk_depth must be one of {sorted(RESNET_LAYOUTS)}, got {self.trunk_depth}")
        if self.trunk_width < 1 or self.head_channels < 1 or self.mask_channels < 1:
            raise ValueError("trunk_width, head_channels and mask_channels must be >= 1")
        if self.trunk_stride not in (8, 16, 32):
            raise ValueError(f"trunk_stride must be 8, 16 or 32, got {self.trunk_stride}")
        if not (_is_power_of_two(self.heatmap_stride) and self.trunk_stride % self.heatmap_stride == 0):
            raise ValueError(
                f"heatmap_stride must be a power of two dividing trunk_stride={self.trunk_stride}, "
                f"got {self.heatmap_stride}"
            )
        if self.upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f"upsample_mode must be one of {UPSAMPLE_MODES}, got {self.upsample_mode!r}")
        if self.head_convs < 0:
            raise ValueError(f"head_convs must be >= 0, got {self.head_convs}")
        if not 0.0 < self.heatmap_prior < 1.0:
            raise ValueError(f"heatmap_prior must be in (0, 1), got {self.heatmap_prior}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be > 0, got {self.std}")
        w, h = self.input_size
        if w % self.trunk_stride or h % self.trunk_stride or w <= 0 or h <= 0:
            raise ValueError(
                f"input_size {self.input_size} must be positive multiples of trunk_stride={self.trunk_stride}")

    @property
    def num_upsample_layers(self) -> int:
        """Number of 2x upsamplings in the keypoint head: ``log2(trunk_stride / heatmap_stride)``."""
        return int(math.log2(self.trunk_stride // self.heatmap_stride))

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(W, H) of the heatmaps for the nominal ``input_size``."""
        return self.input_size[0] // self.heatmap_stride, self.input_size[1] // self.heatmap_stride


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True)]


class CtRNetModel(nn.Module):
    """Keypoint heatmaps and robot mask from an RGB image.

    ``forward(image)`` with image ``(B, 3, H, W)`` float RGB in ``[0, 1]`` (normalisation is inside),
    H and W multiples of ``config.trunk_stride``, returns a dict:

    * ``heatmaps``: ``(B, K, H/4, W/4)`` logits; ``sigmoid`` gives per-cell keypoint probability.
    * ``mask_logits``: ``(B, 1, H/4, W/4)`` robot-mask logits (only if ``config.mask_head``).

    (4 stands for ``config.heatmap_stride``.)
    """

    heatmaps_are_logits = True  # KeypointNet applies a sigmoid; the belief model outputs probabilities

    def __init__(self, config: CtRNetConfig):
        super().__init__()
        self.config = config
        self.num_keypoints = config.num_keypoints
        self.heatmap_stride = config.heatmap_stride
        self.has_mask_head = config.mask_head

        self.normalize = Normalize(config.mean, config.std)
        self.trunk = ResNetTrunk(
            depth=config.trunk_depth, base_channels=config.trunk_width, output_stride=config.trunk_stride,
            dilate=config.trunk_dilate,
        )
        c = self.trunk.out_channels

        layers: list[nn.Module] = []
        in_ch = c
        self._upsample_ends: list[int] = []  # index in keypoint_head of each upsampling block's last layer
        for _ in range(config.num_upsample_layers):
            if config.upsample_mode == "deconv":
                layers += [nn.ConvTranspose2d(in_ch, config.head_channels, 4, stride=2, padding=1, bias=False),
                           nn.BatchNorm2d(config.head_channels), nn.ReLU(inplace=True)]
            else:
                layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                           *_conv_bn_relu(in_ch, config.head_channels)]
            self._upsample_ends.append(len(layers) - 1)
            in_ch = config.head_channels
        for _ in range(config.head_convs):
            layers += _conv_bn_relu(in_ch, config.head_channels)
            in_ch = config.head_channels
        self.keypoint_head = nn.Sequential(*layers)
        self.heatmap_out = nn.Conv2d(in_ch, config.num_keypoints, 1)

        if config.mask_head:
            self.mask_head = nn.Sequential(*_conv_bn_relu(c, config.mask_channels),
                                           nn.Conv2d(config.mask_channels, 1, 1))
        else:
            self.mask_head = None

        # Skip connections: for upsampling j (to stride trunk_stride / 2**(j+1)), the index of the
        # last trunk stage at that stride and a 3x3 projection of it to head_channels.
        self._skip_stages: list[int] = []
        self.skip_laterals = None
        self.mask_refine = None
        if config.skip_connections:
            laterals = []
            stride = config.trunk_stride
            for _ in range(config.num_upsample_layers):
                stride //= 2
                stages = [i for i, s in enumerate(self.trunk.stage_strides) if s == stride]
                if not stages:
                    raise ValueError(f"skip_connections: the trunk has no stage at stride {stride}")
                self._skip_stages.append(stages[-1])
                laterals.append(nn.Conv2d(self.trunk.stage_channels[stages[-1]], config.head_channels, 3,
                                          padding=1))
            self.skip_laterals = nn.ModuleList(laterals)
            if config.mask_head:
                self.mask_refine = nn.Conv2d(in_ch, 1, 3, padding=1)
        self._init_heads()

    def _init_heads(self) -> None:
        heads = [self.keypoint_head, self.heatmap_out] + ([self.mask_head] if self.mask_head is not None else [])
        for head in heads:
            for m in head.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        # Small output weights and a prior bias, so initial heatmaps are ~heatmap_prior everywhere
        # and the first BCE gradients are not dominated by the (mostly empty) background.
        nn.init.normal_(self.heatmap_out.weight, std=1e-3)
        p = self.config.heatmap_prior
        nn.init.constant_(self.heatmap_out.bias, math.log(p / (1.0 - p)))
        # Skip layers start at zero: the model equals the same model without them until they learn.
        for m in self.added_by_skip_connections():
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def added_by_skip_connections(self) -> list[nn.Conv2d]:
        """The layers that ``skip_connections`` adds (empty without it)."""
        layers = list(self.skip_laterals) if self.skip_laterals is not None else []
        return layers + ([self.mask_refine] if self.mask_refine is not None else [])

    def load_warm_start(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Load weights of the same model, or of the same model *without* skip connections.

        In the second case the skip layers keep their zero initialisation, so the outputs are the
        checkpoint's exactly. Returns the names of the parameters left at their initial values.
        Raises RuntimeError if anything else is missing or unexpected.
        """
        result = self.load_state_dict(state_dict, strict=False)
        skip_names = {name for name, _ in self.named_parameters()
                      if name.startswith(("skip_laterals.", "mask_refine."))}
        missing = set(result.missing_keys)
        if result.unexpected_keys or not missing <= skip_names:
            raise RuntimeError(f"weights do not match: missing {sorted(missing - skip_names)}, "
                               f"unexpected {sorted(result.unexpected_keys)}")
        return sorted(missing)

    def _check_input(self, image: torch.Tensor) -> None:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"expected image of shape (B, 3, H, W), got {tuple(image.shape)}")
        s = self.config.trunk_stride
        if image.shape[-2] % s or image.shape[-1] % s:
            raise ValueError(f"image H, W = {tuple(image.shape[-2:])} must be multiples of trunk_stride={s}")

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, H, W)`` RGB in [0, 1] -> ``{"heatmaps": (B, K, H/4, W/4), "mask_logits": (B, 1, H/4, W/4)}``."""
        self._check_input(image)
        stages = self.trunk.forward_stages(self.normalize(image))
        features = stages[-1]  # (B, C, H/s, W/s)
        if self.skip_laterals is None:
            head = self.keypoint_head(features)  # (B, head_channels, H/4, W/4)
        else:
            head = features
            ends = dict(zip(self._upsample_ends, range(len(self._upsample_ends))))
            for i, layer in enumerate(self.keypoint_head):
                head = layer(head)
                if i in ends:  # end of upsampling j: add the trunk stage at the same stride
                    j = ends[i]
                    head = head + self.skip_laterals[j](stages[self._skip_stages[j]])
        heatmaps = self.heatmap_out(head)  # (B, K, H/4, W/4) logits
        out = {"heatmaps": heatmaps}
        if self.mask_head is not None:
            mask = self.mask_head(features)  # (B, 1, H/s, W/s)
            if mask.shape[-2:] != heatmaps.shape[-2:]:
                mask = F.interpolate(mask, size=heatmaps.shape[-2:], mode="bilinear", align_corners=False)
            if self.mask_refine is not None:
                mask = mask + self.mask_refine(head)
            out["mask_logits"] = mask  # (B, 1, H/4, W/4)
        return out
