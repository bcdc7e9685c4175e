"""Inference backends behind one interface: image in, keypoints + confidence (+ mask) out.

``load_detector(path)`` returns a :class:`~ctrnet_ros.core.estimator.KeypointDetector`:

* ``.onnx`` files run on ONNX Runtime. Execution providers are chosen automatically
  (TensorRT -> CUDA -> CPU, whichever this onnxruntime build offers) or given explicitly.
* ``.pt`` / ``.pth`` checkpoints (:func:`ctrnet_ros.net.registry.save_checkpoint`) run on PyTorch,
  on a chosen device.

Both read the keypoint names and the input size from the model file itself (ONNX metadata or
checkpoint entries), so a model never silently pairs with the wrong robot keypoint spec.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.estimator import Detection

__all__ = ["ModelLoadError", "OnnxRuntimeDetector", "TorchDetector", "load_detector", "PROVIDER_PREFERENCE",
           "image_to_tensor_layout"]

logger = logging.getLogger(__name__)

#: ONNX Runtime providers in order of preference when ``providers`` is not given.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class ModelLoadError(RuntimeError):
    """A model file that is missing, corrupt, or not a ctrnet_ros keypoint model."""


def image_to_tensor_layout(image_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 in [0, 1] (the models' input contract)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}")
    return np.ascontiguousarray(image_rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def _check_input(image_rgb: np.ndarray, input_size: tuple[int, int]) -> None:
    if (image_rgb.shape[1], image_rgb.shape[0]) != tuple(input_size):
        raise ValueError(f"detector expects {input_size[0]}x{input_size[1]} input, got "
                         f"{image_rgb.shape[1]}x{image_rgb.shape[0]}")


class OnnxRuntimeDetector:
    """A ctrnet_ros ONNX model on ONNX Runtime.

    Args:
        path: ``.onnx`` file written by :func:`ctrnet_ros.net.export.export_onnx` (single file).
        providers: execution providers, in order; default: :data:`PROVIDER_PREFERENCE` filtered by
            what this onnxruntime build offers.
        intra_op_threads: ONNX Runtime intra-op threads (0 = its default, all cores).
        spin_wait: let idle intra-op threads spin between tasks (ONNX Runtime's default). Spinning
            shortens each inference a little on an idle machine but burns the cores that the process's
            other threads (DDS, forward kinematics, PnP) and other processes need.
    """

    def __init__(self, path: str | os.PathLike, *, providers: Sequence[str] | None = None,
                 intra_op_threads: int = 0, spin_wait: bool = True):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in PROVIDER_PREFERENCE if p in available]
        else:
            unknown = [p for p in providers if p not in available]
            if unknown:
                raise ModelLoadError(f"execution provider(s) {unknown} not available in this onnxruntime "
                                     f"build; available: {available}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt/invalid files
            raise ModelLoadError(f"cannot load ONNX model {path}: {type(exc).__name__}: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.input_size = tuple(int(v) for v in json.loads(meta["ctrnet_ros.input_size"]))
            self.keypoint_names = list(json.loads(meta["keypoint_names"]))
            self.has_mask = meta.get("ctrnet_ros.has_mask", "false") == "true"
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"ONNX model {path} lacks ctrnet_ros metadata ({exc}); export it with "
                                 f"ctrnet-export") from exc
        if int(meta.get("ctrnet_ros.num_keypoints", len(self.keypoint_names))) != len(self.keypoint_names):
            raise ModelLoadError(f"ONNX model {path}: keypoint_names does not match num_keypoints")
        self.providers = self.session.get_providers()
        self.path = path
        self._outputs = ["keypoints", "confidence"] + (["mask"] if self.has_mask else [])
        logger.info("loaded %s on %s", path, ", ".join(self.providers))

    def detect(self, image_rgb: np.ndarray) -> Detection:
        """(H_in, W_in, 3) uint8 RGB at :attr:`input_size` -> keypoints in input pixels."""
        _check_input(image_rgb, self.input_size)
        out = self.session.run(self._outputs, {"image": image_to_tensor_layout(image_rgb)})
        return Detection(keypoints_uv=out[0][0].astype(np.float64), confidence=out[1][0].astype(np.float64),
                         mask=out[2][0, 0] if self.has_mask else None)


class TorchDetector:
    """A ctrnet_ros checkpoint on PyTorch (``torch.load(weights_only=True)``).

    Args:
        path: checkpoint written by :func:`ctrnet_ros.net.registry.save_checkpoint`, with
            ``keypoint_names`` among its extra entries.
        device: torch device string, e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    """

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu"):
        import torch

        from ..net.keypoint_net import KeypointNet
        from ..net.registry import ModelFileError, load_checkpoint

        try:
            model, config, extra = load_checkpoint(path, map_location=device)
        except ModelFileError as exc:
            raise ModelLoadError(str(exc)) from exc
        except RuntimeError as exc:  # e.g. a CUDA device that is not there
            raise ModelLoadError(f"cannot load {path} on device {device!r}: {exc}") from exc
        if "keypoint_names" not in extra:
            raise ModelLoadError(f"checkpoint {path} has no keypoint_names entry")
        self.keypoint_names = list(extra["keypoint_names"])
        self.input_size = tuple(int(v) for v in extra.get("input_size", config.input_size))
        self.net = KeypointNet(model, decode_method=extra.get("decode_method", "quadratic")).eval().to(device)
        self.has_mask = self.net.has_mask
        self.device = torch.device(device)
        self.path = Path(path)
        self._torch = torch

    def detect(self, image_rgb: np.ndarray) -> Detection:
        _check_input(image_rgb, self.input_size)
        with self._torch.inference_mode():
            x = self._torch.from_numpy(image_to_tensor_layout(image_rgb)).to(self.device)
            out = self.net(x)
        return Detection(keypoints_uv=out["keypoints"][0].double().cpu().numpy(),
                         confidence=out["confidence"][0].double().cpu().numpy(),
                         mask=out["mask"][0, 0].cpu().numpy() if self.has_mask else None)


def load_detector(path: str | os.PathLike, *, backend: str = "auto", device: str = "cpu",
                  providers: Sequence[str] | None = None, intra_op_threads: int = 0, spin_wait: bool = True):
    """Load a keypoint model for inference.

    Args:
        path: ``.onnx`` (ONNX Runtime) or ``.pt``/``.pth`` (PyTorch checkpoint).
        backend: ``"auto"`` (by file suffix), ``"onnxruntime"`` or ``"torch"``.
        device: torch device (torch backend).
        providers: ONNX Runtime execution providers (onnxruntime backend); default automatic.
        intra_op_threads, spin_wait: ONNX Runtime thread pool (see :class:`OnnxRuntimeDetector`);
            for torch, ``intra_op_threads`` > 0 sets ``torch.set_num_threads``.
    Raises:
        ModelLoadError: missing/corrupt file, wrong backend for the file, missing metadata.
    """
    path = Path(path)
    if backend not in ("auto", "onnxruntime", "torch"):
        raise ModelLoadError(f"unknown backend {backend!r}; use auto, onnxruntime or torch")
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    if backend == "auto":
        backend = "onnxruntime" if suffix == ".onnx" else "torch" if suffix in (".pt", ".pth") else ""
        if not backend:
            raise ModelLoadError(f"cannot tell the backend from {path.name}; use .onnx, .pt or .pth, or set backend")
    if backend == "onnxruntime":
        return OnnxRuntimeDetector(path, providers=providers, intra_op_threads=intra_op_threads,
                                   spin_wait=spin_wait)
    if intra_op_threads > 0:
        import torch

        torch.set_num_threads(int(intra_op_threads))
    return TorchDetector(path, device=device)
