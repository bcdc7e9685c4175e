"""``ctrnet-export``: checkpoint -> single-file ONNX + model card, loadable by the node's backends.

The checkpoint comes from a 4-step ``pretrain`` of a tiny model on a dataset rendered in the test
(``write_dataset``, 8 frames at 64x48, about 4 s).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from ctrnet_ros.inference import load_detector  # noqa: E402
from ctrnet_ros.net.registry import build_model, load_checkpoint, save_checkpoint  # noqa: E402
from ctrnet_ros.sim.dataset import SimDataset  # noqa: E402
from ctrnet_ros.train.config import TrainConfig  # noqa: E402
from ctrnet_ros.train.export_cli import ExportError, export_checkpoint, main  # noqa: E402
from ctrnet_ros.train.pretrain import pretrain  # noqa: E402

SIZE = (64, 48)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset dir, best.pt) of a tiny run with validation."""
    from ctrnet_ros.sim.dataset import write_dataset

    root = tmp_path_factory.mktemp("export")
    data = write_dataset(root / "data", num_frames=8, seed=5, width=SIZE[0], height=SIZE[1], progress=False)
    cfg = TrainConfig(arch="ctrnet_slim", model={"trunk_width": 8, "head_channels": 16, "mask_channels": 8},
                      input_size=SIZE, data=(str(data),), val=str(data), val_every=4, batch_size=4, steps=4,
                      warmup_steps=1, cpu_bf16=False, num_workers=0, out_dir=str(root / "run"), log_every=1)
    summary = pretrain(cfg, progress=False)
    return data, summary["best"]


REQUIRED = {
    "model": ("file", "format", "opset", "file_bytes", "file_mb", "sha256"),
    "architecture": ("arch", "parameters", "heatmap_stride", "has_mask", "decode_method", "config"),
    "input": ("name", "size_wh", "format", "normalisation", "preprocessing"),
    "keypoints": ("robot", "names"),
    "training": ("preset", "data", "steps", "epochs", "images_seen", "batch_size", "wall_clock_s", "hardware"),
    "validation": ("source", "data", "metrics"),
    "parity": ("keypoints_max_abs_px", "by_output", "keypoints_checked"),
}


def test_int8_variant_loads_agrees_and_has_its_card(trained, tmp_path):
    data, best = trained
    out = tmp_path / "tiny.onnx"
    export_checkpoint(best, out, val=str(data), progress=False, int8=True, calib=str(data), calib_frames=4)
    q_out = tmp_path / "tiny_int8.onnx"
    card = yaml.safe_load(q_out.with_suffix(".yaml").read_text())
    assert card["model"]["file"] == "tiny_int8.onnx" and card["model"]["float_model"] == "tiny.onnx"
    assert card["model"]["file_bytes"] == q_out.stat().st_size
    assert card["quantization"]["calibration_frames"] == 4 and "QDQ" in card["quantization"]["method"]
    assert card["validation"]["metrics"]["frames"] == 8
    assert not list(tmp_path.glob("*.pre.onnx")) and not list(tmp_path.glob("*.tmp.onnx"))
    det, ref = load_detector(q_out), load_detector(out)
    assert det.keypoint_names == ref.keypoint_names and det.input_size == ref.input_size and det.has_mask
    import onnxruntime as ort

    session = ort.InferenceSession(str(q_out), providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in __import__("onnx").load(str(q_out)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # really quantized
    assert session.get_modelmeta().custom_metadata_map["ctrnet_ros.quantization"].startswith("int8")
    frame = np.random.default_rng(0).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    assert np.all(np.isfinite(det.detect(frame).keypoints_uv))


def test_torch_checkpoint_beside_the_onnx_file_has_no_optimizer_and_runs(trained, tmp_path):
    _, best = trained
    out = tmp_path / "tiny.onnx"
    card = export_checkpoint(best, out, progress=False, torch_checkpoint=True)
    pt = tmp_path / "tiny.pt"
    assert card["model"]["torch_checkpoint"]["file"] == "tiny.pt"
    assert card["model"]["torch_checkpoint"]["file_bytes"] == pt.stat().st_size
    model, _, extra = load_checkpoint(pt)  # weights_only=True inside
    assert "optimizer" not in extra and "rng" not in extra and extra["keypoint_names"]
    det_pt, det_onnx = load_detector(pt), load_detector(out)
    frame = np.random.default_rng(1).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    a, b = det_pt.detect(frame), det_onnx.detect(frame)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-3)


def test_int8_without_calibration_data_is_a_clear_error(trained, tmp_path, monkeypatch):
    data, best = trained
    import ctrnet_ros.train.export_cli as export_cli

    monkeypatch.setattr(export_cli, "_parity_images", lambda *a, **k: (None, None))
    with pytest.raises(ExportError, match="calibration frames"):
        export_checkpoint(best, tmp_path / "x.onnx", progress=False, int8=True)


def test_export_writes_onnx_and_card_and_loads(trained, tmp_path):
    data, best = trained
    out = tmp_path / "models" / "panda_tiny.onnx"
    card = export_checkpoint(best, out, val=str(data), progress=False)
    card_path = out.with_suffix(".yaml")
    assert out.is_file() and card_path.is_file()
    assert not list(out.parent.glob("*.data"))  # a single file, weights inside
    on_disk = yaml.safe_load(card_path.read_text())
    assert yaml.safe_dump(on_disk) == yaml.safe_dump(card)  # (NaN != NaN, so compare as text)
    for section, keys in REQUIRED.items():
        for key in keys:
            assert key in card[section], f"card lacks {section}.{key}"
    assert "intended_use" in card and "limitations" in card
    names = SimDataset(data).keypoint_names
    assert card["keypoints"]["names"] == names and card["keypoints"]["robot"] == "panda"
    assert card["input"]["size_wh"] == list(SIZE)
    assert card["input"]["normalisation"]["applied"] == "inside the graph"
    assert card["model"]["file_bytes"] == out.stat().st_size <= 30e6
    assert card["training"]["steps"] == 4 and card["training"]["data"][0]["frames"] == 8
    assert card["validation"]["metrics"]["frames"] == 8 and "add_auc" in card["validation"]["metrics"]
    assert card["parity"]["by_output"]["heatmaps"] < 1e-3

    det = load_detector(out)
    assert det.keypoint_names == names and det.input_size == SIZE and det.has_mask
    result = det.detect(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
    assert result.keypoints_uv.shape == (len(names), 2)


def test_export_cli_uses_stored_metrics_without_val(trained, tmp_path):
    _, best = trained
    out = tmp_path / "m.onnx"
    assert main(["--checkpoint", str(best), "--out", str(out), "--quiet"]) == 0
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert card["validation"]["source"].startswith("stored in the checkpoint")
    assert "pck5" in card["validation"]["metrics"]


def test_corrupt_or_foreign_checkpoint_gives_a_clear_error(trained, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 20)
    with pytest.raises(ExportError, match="cannot export .*corrupt.pt"):
        export_checkpoint(corrupt, tmp_path / "x.onnx")
    assert main(["--checkpoint", str(corrupt), "--out", str(tmp_path / "x.onnx")]) == 1
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ExportError, match="does not exist"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "x.onnx")

    model, config = build_model("ctrnet_slim", input_size=SIZE, trunk_width=8, head_channels=16, mask_channels=8)
    save_checkpoint(tmp_path / "bare.pt", model, config)  # no keypoint names
    with pytest.raises(ExportError, match="no keypoint_names"):
        export_checkpoint(tmp_path / "bare.pt", tmp_path / "x.onnx")


def test_size_limit_is_enforced(trained, tmp_path):
    _, best = trained
    out = tmp_path / "big.onnx"
    with pytest.raises(ExportError, match="over the"):
        export_checkpoint(best, out, max_bytes=1000)
    assert not out.exists()
