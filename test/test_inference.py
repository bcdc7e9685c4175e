"""Inference backends: ONNX Runtime and PyTorch give the same detections from the same weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from ctrnet_ros.inference import ModelLoadError, OnnxRuntimeDetector, load_detector  # noqa: E402
from ctrnet_ros.net.export import export_onnx  # noqa: E402
from ctrnet_ros.net.registry import build_model, save_checkpoint  # noqa: E402

NAMES = [f"kp{i}" for i in range(7)]
SIZE = (64, 48)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("models")
    model, config = build_model("ctrnet_slim", input_size=SIZE, trunk_depth=18, trunk_width=8, head_channels=16,
                                mask_channels=8)
    model.eval()
    save_checkpoint(d / "tiny.pt", model, config, {"keypoint_names": NAMES, "input_size": list(SIZE)})
    export_onnx(model, d / "tiny.onnx", SIZE, metadata={"keypoint_names": NAMES}, atol=None)
    return d


def test_backends_agree(model_files):
    image = np.random.default_rng(0).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    ort_det = load_detector(model_files / "tiny.onnx")
    pt_det = load_detector(model_files / "tiny.pt")
    assert ort_det.keypoint_names == pt_det.keypoint_names == NAMES
    assert ort_det.input_size == pt_det.input_size == SIZE
    assert "CPUExecutionProvider" in ort_det.providers
    a, b = ort_det.detect(image), pt_det.detect(image)
    assert a.keypoints_uv.shape == (7, 2) and a.confidence.shape == (7,)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    assert a.mask is not None and a.mask.shape == (SIZE[1] // 4, SIZE[0] // 4)
    np.testing.assert_allclose(a.mask, b.mask, atol=1e-4)


def test_wrong_input_size_is_refused(model_files):
    det = load_detector(model_files / "tiny.onnx")
    with pytest.raises(ValueError, match="expects 64x48"):
        det.detect(np.zeros((48, 65, 3), np.uint8))


def test_bad_model_files(model_files, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_detector(tmp_path / "nope.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes((model_files / "tiny.onnx").read_bytes()[:500])
    with pytest.raises(ModelLoadError, match="cannot load ONNX model"):
        load_detector(corrupt)
    bad_pt = tmp_path / "corrupt.pt"
    bad_pt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError):
        load_detector(bad_pt)
    with pytest.raises(ModelLoadError, match="backend"):
        load_detector(model_files / "tiny.onnx", backend="tensorflow")
    with pytest.raises(ModelLoadError, match="not available"):
        OnnxRuntimeDetector(model_files / "tiny.onnx", providers=["NoSuchExecutionProvider"])


def test_onnxruntime_thread_options(model_files):
    image = np.random.default_rng(1).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    default = load_detector(model_files / "tiny.onnx")
    quiet = load_detector(model_files / "tiny.onnx", intra_op_threads=1, spin_wait=False)
    opts = quiet.session.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert default.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    a, b = default.detect(image), quiet.detect(image)
    np.testing.assert_allclose(a.keypoints_uv, b.keypoints_uv, atol=1e-5)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-6)
