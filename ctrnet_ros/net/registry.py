"""Models by name, and checkpoints that carry their own architecture.

``build_model("ctrnet_slim", num_keypoints=6)`` returns ``(model, config)``; every keyword is a
field of the architecture's config dataclass. A checkpoint is a ``torch.save``'d dict

    {"format_version": 1, "arch": name, "config": dataclasses.asdict(config), "state_dict": ..., **extra}

holding only plain Python types and tensors, so :func:`load_checkpoint` can (and does) read it with
``torch.load(..., weights_only=True)``: loading a model file never runs pickled code.

==================  =========================================================================
name                architecture
==================  =========================================================================
ctrnet_resnet18     ResNet-18 (width 64), stride 16 dilated, 2 deconvs (128 ch) -> stride 4
ctrnet_resnet50     ResNet-50 (width 64), stride 8 dilated, 1 deconv (256 ch): the paper's trunk
ctrnet_slim         ResNet-18 at width 32, stride 16 truncated (no stage 4), 2 deconvs (64 ch)
belief_heindl       Heindl et al.'s 6-stage belief-map RobotJointModel (no mask head)
==================  =========================================================================
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import torch
from torch import nn

from .belief import BeliefMapConfig, RobotJointModel
from .ctrnet import CtRNetConfig, CtRNetModel

__all__ = [
    "ModelFileError",
    "model_registry",
    "build_model",
    "build_ctrnet_resnet18",
    "build_ctrnet_resnet50",
    "build_ctrnet_slim",
    "build_belief_heindl",
    "save_checkpoint",
    "load_checkpoint",
    "CHECKPOINT_FORMAT_VERSION",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
_RESERVED_KEYS = ("format_version", "arch", "config", "state_dict")

ModelConfig = Union[CtRNetConfig, BeliefMapConfig]


class ModelFileError(ValueError):
    """A model file that cannot be used: unreadable, corrupt, incomplete, or not matching its architecture."""


# --- builders --------------------------------------------------------------------------------

CTRNET_RESNET18 = CtRNetConfig(trunk_depth=18, trunk_width=64, trunk_stride=16, trunk_dilate=True, head_channels=128)
CTRNET_RESNET50 = CtRNetConfig(trunk_depth=50, trunk_width=64, trunk_stride=8, trunk_dilate=True, head_channels=256,
                               mask_channels=256)
CTRNET_SLIM = CtRNetConfig(trunk_depth=18, trunk_width=32, trunk_stride=16, trunk_dilate=False, head_channels=64,
                           mask_channels=32)
BELIEF_HEINDL = BeliefMapConfig()


def _apply_overrides(defaults: Any, overrides: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(defaults)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {type(defaults).__name__} field(s) {unknown}; valid fields: {sorted(names)}")
    return dataclasses.replace(defaults, **overrides)


def build_ctrnet_resnet18(**overrides) -> tuple[CtRNetModel, CtRNetConfig]:
    """CtRNet with a ResNet-18 trunk at stride 16 (dilated stage 4); ``overrides``: CtRNetConfig fields."""
    config = _apply_overrides(CTRNET_RESNET18, overrides)
    return CtRNetModel(config), config


def build_ctrnet_resnet50(**overrides) -> tuple[CtRNetModel, CtRNetConfig]:
    """CtRNet as in the paper: ResNet-50 trunk at stride 8 (dilated stages 3-4), one deconvolution."""
    config = _apply_overrides(CTRNET_RESNET50, overrides)
    return CtRNetModel(config), config


def build_ctrnet_slim(**overrides) -> tuple[CtRNetModel, CtRNetConfig]:
    """CPU-friendly CtRNet: ResNet-18 at width 32, truncated at stride 16, 64-channel head."""
    config = _apply_overrides(CTRNET_SLIM, overrides)
    return CtRNetModel(config), config


def build_belief_heindl(**overrides) -> tuple[RobotJointModel, BeliefMapConfig]:
    """Heindl et al.'s RobotJointModel; ``overrides``: BeliefMapConfig fields."""
    config = _apply_overrides(BELIEF_HEINDL, overrides)
    return RobotJointModel(config), config


model_registry: dict[str, Callable[..., tuple[nn.Module, ModelConfig]]] = {
    "ctrnet_resnet18": build_ctrnet_resnet18,
    "ctrnet_resnet50": build_ctrnet_resnet50,
    "ctrnet_slim": build_ctrnet_slim,
    "belief_heindl": build_belief_heindl,
}


def build_model(name: str, **overrides) -> tuple[nn.Module, ModelConfig]:
    """Build a registered model: ``(model, config)``. The model's ``arch`` attribute is set to ``name``.

    Raises ValueError for an unknown name or an unknown/invalid config field.
    """
    if name not in model_registry:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(model_registry)}")
    model, config = model_registry[name](**overrides)
    model.arch = name
    return model, config


# --- checkpoints -----------------------------------------------------------------------------

def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` is made of types that ``torch.load(weights_only=True)`` reads back."""
    # Exact types: subclasses such as torch.__version__ (a str subclass) pass isinstance but fail to load.
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if type(value) is dict:
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: dict key {k!r} is not str/int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold only plain Python types and tensors")


def save_checkpoint(
    path: Union[str, os.PathLike],
    model: nn.Module,
    config: ModelConfig,
    extra: Mapping[str, Any] | None = None,
    *,
    arch: str | None = None,
) -> None:
    """Write ``{"format_version", "arch", "config", "state_dict", **extra}`` to ``path`` (atomically).

    Args:
        model: the network; its state dict is stored on CPU.
        config: its config dataclass (stored as a plain dict).
        extra: more plain data (epoch, metrics, keypoint names, optimizer state ...); keys must not
            clash with the reserved ones, values must be plain Python types or tensors.
        arch: registry name; defaults to ``model.arch`` (set by :func:`build_model`), else the
            canonical name for the config type.
    """
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra uses reserved checkpoint key(s) {clash}")
    _check_plain(extra, "extra")
    arch = arch or getattr(model, "arch", None) or (
        "belief_heindl" if isinstance(config, BeliefMapConfig) else "ctrnet_resnet18")
    if arch not in model_registry:
        raise ValueError(f"unknown arch {arch!r}; registered: {sorted(model_registry)}")
    config_dict = dataclasses.asdict(config)
    _check_plain(config_dict, "config")
    state_dict = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    checkpoint = {"format_version": CHECKPOINT_FORMAT_VERSION, "arch": arch, "config": config_dict,
                  "state_dict": state_dict, **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so a crash never leaves a half-written model file.
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("saved %s checkpoint to %s", arch, path)


def load_checkpoint(
    path: Union[str, os.PathLike],
    map_location: Union[str, torch.device] = "cpu",
) -> tuple[nn.Module, ModelConfig, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(model, config, extra)``.

    The model is rebuilt from ``arch`` and ``config``, loaded strictly, and returned in eval mode on
    ``map_location``. ``extra`` holds every key other than the reserved ones.

    Raises:
        ModelFileError: missing or unreadable file, corrupt bytes, content that is not plain data,
            missing keys, unknown arch, invalid config, or weights not matching the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError,
            KeyError, AttributeError, ImportError, TypeError, IndexError) as exc:
        # torch.load reports corrupt archives, truncation and forbidden pickled globals through a
        # variety of exception types; all mean the same to a caller: this file is not usable.
        raise ModelFileError(f"cannot read model file {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(checkpoint, dict):
        raise ModelFileError(f"model file {path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    missing = [k for k in ("arch", "config", "state_dict") if k not in checkpoint]
    if missing:
        raise ModelFileError(f"model file {path} lacks key(s) {missing}; is it a ctrnet_ros checkpoint?")
    version = checkpoint.get("format_version", CHECKPOINT_FORMAT_VERSION)
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ModelFileError(f"model file {path} has format_version {version}, expected {CHECKPOINT_FORMAT_VERSION}")
    arch, config_dict, state_dict = checkpoint["arch"], checkpoint["config"], checkpoint["state_dict"]
    if arch not in model_registry:
        raise ModelFileError(f"model file {path} names unknown arch {arch!r}; registered: {sorted(model_registry)}")
    if not isinstance(config_dict, dict) or not isinstance(state_dict, dict):
        raise ModelFileError(f"model file {path}: 'config' and 'state_dict' must be dicts")
    try:
        model, config = build_model(arch, **config_dict)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"model file {path}: invalid {arch} config: {exc}") from exc
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"model file {path}: weights do not match {arch} with its config: {exc}") from exc
    model.to(map_location).eval()
    extra = {k: v for k, v in checkpoint.items() if k not in _RESERVED_KEYS}
    logger.info("loaded %s checkpoint from %s", arch, path)
    return model, config, extra
