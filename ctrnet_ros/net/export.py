"""ONNX export of a :class:`~ctrnet_ros.net.keypoint_net.KeypointNet`, checked against onnxruntime.

The exported graph is the whole inference contract of :mod:`ctrnet_ros.net.keypoint_net`: input
``image`` ``(B, 3, H, W)`` float32 RGB in [0, 1] (normalisation inside), outputs ``keypoints``
``(B, K, 2)`` in input pixels, ``confidence`` ``(B, K)``, ``mask`` and ``heatmaps``
``(B, ., H/4, W/4)``; the batch axis is dynamic, H and W are fixed at export.

It is written as a *single* ``.onnx`` file (weights inside, no external ``.data``), with a model
card in the ONNX ``metadata_props`` (see :data:`METADATA_KEYS` and :func:`read_onnx_metadata`):
architecture, config, K, stride, ``has_mask`` (False for the belief model, whose mask output is
all zeros), input format and keypoint convention.

Usage::

    model, config = build_model("ctrnet_slim")
    report = export_onnx(model, "models/ctrnet_slim.onnx", config.input_size)
    report["parity_max_abs"]  # max |keypoints_ort - keypoints_torch| in pixels
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from .decode import peak_sharpness
from .keypoint_net import INPUT_NAME, OUTPUT_NAMES, KeypointNet

__all__ = ["export_onnx", "quantize_int8", "read_onnx_metadata", "ExportParityError", "METADATA_KEYS"]

logger = logging.getLogger(__name__)

#: metadata_props written by :func:`export_onnx` (values are strings; JSON where structured).
METADATA_KEYS = (
    "ctrnet_ros.format_version", "ctrnet_ros.arch", "ctrnet_ros.config", "ctrnet_ros.num_keypoints",
    "ctrnet_ros.heatmap_stride", "ctrnet_ros.has_mask", "ctrnet_ros.input_size", "ctrnet_ros.input_format",
    "ctrnet_ros.keypoint_convention", "ctrnet_ros.decode_method",
)
_INPUT_FORMAT = "float32 RGB in [0, 1], NCHW; mean/std normalisation is inside the graph"
_KEYPOINT_CONVENTION = ("(u, v) in network-input pixels; the centre of the top-left pixel is (0, 0) (OpenCV); "
                        "heatmap cell (i, j) is centred at input pixel ((j + 0.5) s - 0.5, (i + 0.5) s - 0.5)")


class ExportParityError(RuntimeError):
    """The exported graph's outputs differ from torch's by more than the tolerance."""


class _TupleOutputs(nn.Module):
    """Adapter: the exporters want a tuple of outputs in a fixed order (:data:`OUTPUT_NAMES`)."""

    def __init__(self, net: KeypointNet):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(image)
        return tuple(out[name] for name in OUTPUT_NAMES)


def _export_dynamo(adapter: nn.Module, dummy: torch.Tensor, opset: int):
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        adapter, (dummy,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES), dynamic_shapes={"image": {0: batch}}, optimize=True, verbose=False,
    )
    return program.model_proto


def _export_torchscript(adapter: nn.Module, dummy: torch.Tensor, opset: int):
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(
        adapter, (dummy,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES), dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
    )
    return onnx.load_from_string(buffer.getvalue())


def _card(net: KeypointNet, input_size: tuple[int, int], metadata: Mapping[str, Any] | None) -> dict[str, str]:
    model = net.model
    config = getattr(model, "config", None)
    card = {
        "ctrnet_ros.format_version": "1",
        "ctrnet_ros.arch": str(getattr(model, "arch", type(model).__name__)),
        "ctrnet_ros.config": json.dumps(dataclasses.asdict(config)) if dataclasses.is_dataclass(config) else "{}",
        "ctrnet_ros.num_keypoints": str(net.num_keypoints),
        "ctrnet_ros.heatmap_stride": str(net.heatmap_stride),
        "ctrnet_ros.has_mask": "true" if net.has_mask else "false",
        "ctrnet_ros.input_size": json.dumps(list(input_size)),
        "ctrnet_ros.input_format": _INPUT_FORMAT,
        "ctrnet_ros.keypoint_convention": _KEYPOINT_CONVENTION,
        "ctrnet_ros.decode_method": net.decode_method,
    }
    for key, value in (metadata or {}).items():
        if str(key) in card:
            raise ValueError(f"metadata key {key!r} is reserved for the model card")
        card[str(key)] = value if isinstance(value, str) else json.dumps(value)
    return card


def _has_dynamic_batch(proto) -> bool:
    dims = [proto.graph.input[0].type.tensor_type.shape.dim[0]]
    dims += [o.type.tensor_type.shape.dim[0] for o in proto.graph.output]
    return all(d.dim_param and not d.HasField("dim_value") for d in dims)


def read_onnx_metadata(path: Union[str, os.PathLike]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (see :data:`METADATA_KEYS`)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


@torch.no_grad()
def _parity(net: KeypointNet, path: Path, images: Sequence[torch.Tensor], min_confidence: float,
            min_sharpness: float) -> dict[str, Any]:
    """Run torch and onnxruntime (CPU) on each ``(B, 3, H, W)`` batch and compare every output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = {name: 0.0 for name in OUTPUT_NAMES}
    worst_posed, checked, total = 0.0, 0, 0
    for image in images:
        expected = net(image)
        got = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: image.numpy()})))
        for name in OUTPUT_NAMES:
            if tuple(got[name].shape) != tuple(expected[name].shape):
                raise ExportParityError(f"output {name!r} has shape {got[name].shape} in ONNX Runtime, "
                                        f"{tuple(expected[name].shape)} in torch (batch {image.shape[0]})")
            worst[name] = max(worst[name], (torch.from_numpy(got[name]) - expected[name]).abs().max().item())
        # A keypoint without a confident, sharp peak (untrained net, robot absent, flat or saturated
        # maximum) has an argmax / sub-pixel offset set by float32 rounding, in torch as much as
        # in ORT; comparing it says nothing about the export.
        model = net.model
        sharpness = peak_sharpness(model(image)["heatmaps"], logits=bool(model.heatmaps_are_logits))
        posed = (expected["confidence"] >= min_confidence) & (sharpness >= min_sharpness)  # (B, K)
        diff = (torch.from_numpy(got["keypoints"]) - expected["keypoints"]).abs().amax(dim=-1)  # (B, K)
        if posed.any():
            worst_posed = max(worst_posed, diff[posed].max().item())
        checked += int(posed.sum())
        total += posed.numel()
    return {"by_output": worst, "keypoints_posed": worst_posed if checked else None,
            "checked": checked, "total": total}


def export_onnx(
    model: nn.Module,
    path: Union[str, os.PathLike],
    input_size: tuple[int, int],
    opset: int = 18,
    *,
    decode_method: str = "quadratic",
    beta: float = 1.0,
    metadata: Mapping[str, Any] | None = None,
    check_parity: bool = True,
    atol: float | None = 1e-4,
    parity_batch_sizes: Sequence[int] = (1, 3),
    parity_images: torch.Tensor | None = None,
    parity_min_confidence: float = 0.5,
    parity_min_sharpness: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Export ``model`` (a registry model or a :class:`KeypointNet`) to a single ONNX file and check it.

    Tries the dynamo exporter first and falls back to the TorchScript exporter if it fails. The
    model is exported in eval mode (its previous mode is restored afterwards).

    Args:
        model: a CtRNet/belief model (wrapped in ``KeypointNet(model, decode_method, beta)``) or a
            ``KeypointNet`` (used as is; ``decode_method``/``beta`` ignored).
        path: output ``.onnx`` file; parent folders are created.
        input_size: ``(W, H)`` of the exported input.
        opset: ONNX opset (18 is verified here with onnxruntime).
        metadata: extra model-card entries (e.g. ``{"keypoint_names": [...]}``); non-strings are JSON.
        check_parity: run onnxruntime (CPU) and torch on random images, one batch of each of
            ``parity_batch_sizes`` (which also exercises the dynamic batch axis), plus
            ``parity_images`` ``(B, 3, H, W)`` in [0, 1] if given (real images make the keypoint
            check meaningful for a trained model), and compare all outputs.
        atol: raise :class:`ExportParityError` if ``parity_max_abs`` (input pixels) or any heatmap
            value differs by more; None to only report.
        parity_min_confidence, parity_min_sharpness: keypoints whose torch confidence or
            :func:`~ctrnet_ros.net.decode.peak_sharpness` (``1/sigma^2`` of a Gaussian peak; 0.05
            admits sigma up to 4.5 heatmap cells) is below these are left out of ``parity_max_abs``:
            without a confident, sharp peak (untrained net, robot absent) the argmax and sub-pixel
            offset are set by float32 rounding, in torch itself as much as in ORT.

    Returns:
        ``dict(path, exporter, opset, input_name, output_names, input_size, dynamic_batch,
        file_bytes, num_keypoints, heatmap_stride, has_mask, parity_max_abs, parity_max_abs_by_output,
        parity_keypoints_checked, parity_keypoints_total, parity_batch_sizes)``. ``parity_max_abs`` is
        the max |ORT - torch| in input pixels over the confident keypoints (None if none was, or
        when ``check_parity`` is False); ``parity_max_abs_by_output`` covers all values.
    """
    import onnx

    net = model if isinstance(model, KeypointNet) else KeypointNet(model, decode_method=decode_method, beta=beta)
    w, h = (int(v) for v in input_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training  # the caller's module; a fresh KeypointNet wrapper starts in train mode
    net.eval()
    try:
        adapter = _TupleOutputs(net).eval()
        # Batch 2, not 1: torch.export specialises dimensions whose example size is 1.
        dummy = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
        try:
            proto = _export_dynamo(adapter, dummy, opset)
            exporter = "dynamo"
        except Exception as exc:  # the dynamo exporter fails through many exception types
            logger.warning("dynamo ONNX export failed (%s: %s); falling back to the TorchScript exporter",
                           type(exc).__name__, exc)
            proto = _export_torchscript(adapter, dummy, opset)
            exporter = "torchscript"
        for key, value in _card(net, (w, h), metadata).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save_model(proto, str(path), save_as_external_data=False)
        report: dict[str, Any] = {
            "path": str(path), "exporter": exporter, "opset": opset, "input_name": INPUT_NAME,
            "output_names": list(OUTPUT_NAMES), "input_size": (w, h), "dynamic_batch": _has_dynamic_batch(proto),
            "file_bytes": path.stat().st_size, "num_keypoints": net.num_keypoints,
            "heatmap_stride": net.heatmap_stride, "has_mask": net.has_mask,
            "parity_max_abs": None, "parity_max_abs_by_output": None, "parity_keypoints_checked": None,
            "parity_keypoints_total": None, "parity_batch_sizes": None,
        }
        if check_parity:
            generator = torch.Generator().manual_seed(seed + 1)
            images = [torch.rand(b, 3, h, w, generator=generator) for b in parity_batch_sizes]
            if parity_images is not None:
                images.append(parity_images.detach().to("cpu", torch.float32))
            parity = _parity(net, path, images, parity_min_confidence, parity_min_sharpness)
            report.update(parity_max_abs=parity["keypoints_posed"], parity_max_abs_by_output=parity["by_output"],
                          parity_keypoints_checked=parity["checked"], parity_keypoints_total=parity["total"],
                          parity_batch_sizes=[int(im.shape[0]) for im in images])
    finally:
        model.train(was_training)
    logger.info("exported %s with the %s exporter (%.1f MB, keypoint parity %s over %s keypoints)", path,
                exporter, report["file_bytes"] / 1e6, report["parity_max_abs"], report.get("parity_keypoints_checked"))
    if check_parity:
        if report["parity_max_abs"] is None:
            logger.warning("%s: no keypoint had a confident, sharp peak on the parity images, so keypoint parity "
                           "is unchecked (heatmap parity %.3g); pass parity_images with the robot in view",
                           path, report["parity_max_abs_by_output"]["heatmaps"])
        if atol is not None:
            worst_heatmap = report["parity_max_abs_by_output"]["heatmaps"]
            if report["parity_max_abs"] is not None and report["parity_max_abs"] > atol:
                raise ExportParityError(f"{path}: confident keypoints differ between ONNX Runtime and torch by "
                                        f"{report['parity_max_abs']:.3g} px > atol={atol}")
            if worst_heatmap > atol:
                raise ExportParityError(f"{path}: heatmaps differ between ONNX Runtime and torch by "
                                        f"{worst_heatmap:.3g} > atol={atol}")
    return report


def quantize_int8(fp32_path: Union[str, os.PathLike], out_path: Union[str, os.PathLike],
                  calibration: torch.Tensor, *, min_confidence: float = 0.3) -> dict[str, Any]:
    """Static INT8 quantization (ONNX Runtime, QDQ, per-channel weights) of an exported model.

    Activation ranges come from ``calibration``, (N, 3, H, W) letterboxed frames in [0, 1] as the
    estimator feeds them (use training frames, not validation frames). The ``ctrnet_ros`` metadata
    is kept, so the file loads like its float model. Agreement with the float model is measured on
    the same frames: keypoint displacement (input pixels) where the float model is confident.

    Returns:
        ``dict(file_bytes, calibration_frames, keypoints_median_abs_px, keypoints_p95_abs_px,
        keypoints_max_abs_px, keypoints_compared, mask_max_abs)``.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    frames = [calibration[i:i + 1].numpy() for i in range(len(calibration))]
    if not frames:
        raise ValueError("INT8 quantization needs calibration frames")

    class _Frames(CalibrationDataReader):
        def __init__(self):
            self._it = iter(frames)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {INPUT_NAME: x}

    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    tmp = out_path.with_name(out_path.stem + ".tmp.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre))  # shape inference + graph clean-up, as ORT recommends
        quantize_static(str(pre), str(tmp), _Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        proto = onnx.load(str(tmp))  # quantize_static keeps the float model's metadata; add what it did
        proto.metadata_props.add(key="ctrnet_ros.quantization",
                                 value="int8 static, QDQ, per-channel weights (onnxruntime.quantization)")
        onnx.save(proto, str(tmp))
        os.replace(tmp, out_path)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)

    options = ort.SessionOptions()
    options.log_severity_level = 3
    ref = ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
    q8 = ort.InferenceSession(str(out_path), options, providers=["CPUExecutionProvider"])
    diffs, mask_worst = [], 0.0
    names = ["keypoints", "confidence", "mask"]
    for x in frames:
        a = dict(zip(names, ref.run(names, {INPUT_NAME: x})))
        b = dict(zip(names, q8.run(names, {INPUT_NAME: x})))
        sure = a["confidence"][0] >= min_confidence
        diffs.extend(np.abs(a["keypoints"][0] - b["keypoints"][0]).max(axis=-1)[sure].tolist())
        mask_worst = max(mask_worst, float(np.abs(a["mask"] - b["mask"]).max()))
    d = np.asarray(diffs, dtype=np.float64)
    return {"file_bytes": out_path.stat().st_size, "calibration_frames": len(frames),
            "keypoints_median_abs_px": float(np.median(d)) if d.size else None,
            "keypoints_p95_abs_px": float(np.percentile(d, 95)) if d.size else None,
            "keypoints_max_abs_px": float(d.max()) if d.size else None,
            "keypoints_compared": int(d.size), "mask_max_abs": mask_worst}
