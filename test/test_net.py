"""Networks, decoding, checkpoints and ONNX export of ctrnet_ros.net (CPU, tiny configs, seeded)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from ctrnet_ros.net import (  # noqa: E402
    BeliefMapConfig,
    CtRNetConfig,
    KeypointNet,
    ModelFileError,
    ResNetTrunk,
    build_model,
    decode_heatmaps,
    heatmap_to_input_coords,
    input_to_heatmap_coords,
    load_checkpoint,
    model_registry,
    peak_sharpness,
    render_gaussian_heatmaps,
    save_checkpoint,
    soft_argmax_2d,
)

W, H = 128, 96  # small network input (W, H)
TINY_CTRNET = dict(trunk_width=8, head_channels=16, mask_channels=8, num_keypoints=3, input_size=(W, H))
TINY_BELIEF = dict(vgg_channels=(8, 16, 32), stage_channels=16, stage_hidden_channels=32, num_stages=2,
                   num_keypoints=3, input_size=(W, H))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _gaussian_maps(uv_hm: torch.Tensor, size: tuple[int, int], sigma: float, amplitude: float = 1.0) -> torch.Tensor:
    """(B, K, 2) heatmap-pixel peaks -> (B, K, h, w) Gaussians (stride 1, so input = heatmap coords)."""
    visible = torch.ones(uv_hm.shape[:2], dtype=torch.bool)
    return amplitude * render_gaussian_heatmaps(uv_hm, visible, size, 1, sigma)


# --- trunk and models ------------------------------------------------------------------------

@pytest.mark.parametrize("depth,params", [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032)])
def test_resnet_trunk_matches_reference_parameter_counts(depth, params):
    # The standard ResNets without their classifier (torchvision's counts minus fc).
    with torch.device("meta"):
        trunk = ResNetTrunk(depth=depth, output_stride=32)
    assert sum(p.numel() for p in trunk.parameters()) == params


@pytest.mark.parametrize("stride,dilate,stages",
                         [(32, True, 4), (16, True, 4), (8, True, 4), (16, False, 3), (8, False, 2)])
@torch.no_grad()
def test_resnet_trunk_output_stride(stride, dilate, stages):
    trunk = ResNetTrunk(depth=18, base_channels=8, output_stride=stride, dilate=dilate).eval()
    y = trunk(torch.rand(2, 3, H, W))
    assert trunk.num_stages == stages
    assert y.shape == (2, trunk.out_channels, H // stride, W // stride)
    assert trunk.out_channels == 8 * 2 ** (stages - 1)


def test_resnet_trunk_rejects_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        ResNetTrunk(depth=101)
    with pytest.raises(ValueError, match="output_stride"):
        ResNetTrunk(output_stride=4)


@pytest.mark.parametrize("name", sorted(model_registry))
@torch.no_grad()
def test_registry_models_output_shapes(name):
    # Full-size models on the meta device: shapes are propagated without any arithmetic.
    with torch.device("meta"):
        model, config = build_model(name, input_size=(W, H))
        image = torch.empty(2, 3, H, W)
    model.eval()
    assert model.arch == name
    out = model(image)
    k = config.num_keypoints
    assert out["heatmaps"].shape == (2, k, H // 4, W // 4)
    if isinstance(config, CtRNetConfig):
        assert out["mask_logits"].shape == (2, 1, H // 4, W // 4)
    else:
        assert "mask_logits" not in out
        assert len(out["beliefs"]) == config.num_stages and out["beliefs"][-1] is out["heatmaps"]
    res = KeypointNet(model)(image)
    assert res["keypoints"].shape == (2, k, 2)
    assert res["confidence"].shape == (2, k)
    assert res["mask"].shape == (2, 1, H // 4, W // 4)
    assert res["heatmaps"].shape == (2, k, H // 4, W // 4)


@pytest.mark.parametrize("name", ["ctrnet_slim", "belief_heindl"])
@torch.no_grad()
def test_tiny_models_forward_values(name):
    model, config = build_model(name, **(TINY_CTRNET if name.startswith("ctrnet") else TINY_BELIEF))
    res = KeypointNet(model.eval())(torch.rand(2, 3, H, W))
    assert ((res["confidence"] >= 0) & (res["confidence"] <= 1)).all()
    assert ((res["heatmaps"] >= 0) & (res["heatmaps"] <= 1)).all()
    assert ((res["mask"] >= 0) & (res["mask"] <= 1)).all()
    kp = res["keypoints"]
    assert torch.isfinite(kp).all() and (kp >= -4.5).all()
    assert (kp[..., 0] <= W + 3.5).all() and (kp[..., 1] <= H + 3.5).all()
    assert KeypointNet(model).has_mask == (name == "ctrnet_slim")
    if name == "belief_heindl":
        assert torch.all(res["mask"] == 0)


@torch.no_grad()
def test_ctrnet_variants_and_mask_switch():
    for overrides in (dict(trunk_stride=8, trunk_dilate=False),
                      dict(trunk_stride=32, upsample_mode="bilinear", head_convs=1),
                      dict(trunk_depth=50, trunk_stride=16, heatmap_stride=8)):
        model, config = build_model("ctrnet_slim", **{**TINY_CTRNET, **overrides})
        out = model.eval()(torch.rand(1, 3, H, W))
        s = config.heatmap_stride
        assert out["heatmaps"].shape == (1, 3, H // s, W // s)
        assert out["mask_logits"].shape == (1, 1, H // s, W // s)
    model, _ = build_model("ctrnet_slim", **TINY_CTRNET, mask_head=False)
    assert "mask_logits" not in model.eval()(torch.rand(1, 3, H, W))
    net = KeypointNet(model)
    assert not net.has_mask
    assert torch.all(net(torch.rand(1, 3, H, W))["mask"] == 0)


def test_skip_connections_start_as_the_model_without_them_and_then_learn():
    torch.manual_seed(0)
    plain, config = build_model("ctrnet_resnet18", **TINY_CTRNET)
    for p in plain.parameters():  # a "trained" model: no zero BatchNorm gains, so every path carries signal
        p.data.add_(0.1 * torch.randn_like(p))
    skip, skip_config = build_model("ctrnet_resnet18", **TINY_CTRNET, skip_connections=True)
    assert dataclasses.replace(config, skip_connections=True) == skip_config
    fresh = skip.load_warm_start(plain.state_dict())
    assert fresh == sorted(n for n, _ in skip.named_parameters() if n.startswith(("skip_laterals", "mask_refine")))
    x = torch.rand(2, 3, H, W)
    plain.eval(), skip.eval()
    with torch.no_grad():
        a, b = plain(x), skip(x)
    for key in ("heatmaps", "mask_logits"):
        assert torch.equal(a[key], b[key]), key
    # the zero-initialised layers receive gradients, and once they move the output depends on them
    skip.train()
    out = skip(x)
    (out["heatmaps"].square().mean() + out["mask_logits"].square().mean()).backward()
    for layer in skip.added_by_skip_connections():
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
        layer.weight.data.normal_(std=0.1)
    skip.eval()
    with torch.no_grad():
        c = skip(x)
    assert not torch.allclose(c["heatmaps"], a["heatmaps"]) and not torch.allclose(c["mask_logits"], a["mask_logits"])
    # anything other than the skip layers missing is refused
    state = dict(plain.state_dict())
    state.pop("heatmap_out.bias")
    with pytest.raises(RuntimeError, match="heatmap_out.bias"):
        skip.load_warm_start(state)


def test_skip_connections_need_trunk_stages_at_the_head_strides():
    # a truncated stride-8 trunk still has layer1 at stride 4; every valid layout has a stage per stride
    for overrides in (dict(trunk_stride=8, trunk_dilate=False), dict(trunk_stride=32, upsample_mode="bilinear")):
        model, config = build_model("ctrnet_slim", **{**TINY_CTRNET, **overrides}, skip_connections=True)
        out = model.eval()(torch.rand(1, 3, H, W))
        assert out["heatmaps"].shape[-2:] == (H // 4, W // 4)
        assert len(model.skip_laterals) == config.num_upsample_layers


def test_configs_validate_and_round_trip_through_plain_dicts():
    with pytest.raises(ValueError, match="multiples"):
        CtRNetConfig(input_size=(100, 96))
    with pytest.raises(ValueError, match="heatmap_stride"):
        CtRNetConfig(heatmap_stride=3)
    with pytest.raises(ValueError, match="multiples of 4"):
        BeliefMapConfig(input_size=(130, 96))
    with pytest.raises(ValueError, match="unknown CtRNetConfig field"):
        build_model("ctrnet_slim", trunk_wdth=8)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("ctrnet_resnet101")
    config = CtRNetConfig(**TINY_CTRNET)
    # lists (as JSON/YAML give them back) become tuples again, so configs stay hashable and equal
    as_lists = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    assert CtRNetConfig(**as_lists) == config and hash(CtRNetConfig(**as_lists)) == hash(config)
    assert CtRNetConfig().num_upsample_layers == 2 and CtRNetConfig().heatmap_size == (80, 60)


@torch.no_grad()
def test_input_sizes_not_multiple_of_stride_are_rejected():
    model, _ = build_model("ctrnet_slim", **TINY_CTRNET)
    with pytest.raises(ValueError, match="multiples"):
        model(torch.rand(1, 3, 100, 128))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 1, 96, 128))


def test_belief_heindl_parameter_count_matches_listing():
    # Heindl et al.'s RobotJointModel listing at K = 7 (conv: in*out*k*k [+ out bias]; BN: 2*C).
    def conv(cin, cout, k, bias=True):
        return cin * cout * k * k + (cout if bias else 0)

    bn = 2 * 128
    features = conv(3, 64, 3) + conv(64, 64, 3) + conv(64, 128, 3) + conv(128, 128, 3) + conv(128, 256, 3)
    head = conv(128, 512, 1) + conv(512, 7, 1)
    stage0 = conv(256, 128, 3, False) + bn + 2 * (conv(128, 128, 3, False) + bn) + head
    stage_t = conv(263, 128, 7, False) + bn + 4 * (conv(128, 128, 7, False) + bn) + head
    expected = features + stage0 + 5 * stage_t
    assert expected == 25_874_154
    with torch.device("meta"):
        model, config = build_model("belief_heindl")
    assert config.num_keypoints == 7
    assert sum(p.numel() for p in model.parameters()) == expected
    # the listing's layer names and shapes
    sd = model.state_dict()
    assert sd["stages.1.0.weight"].shape == (128, 263, 7, 7)
    assert sd["stages.5.17.weight"].shape == (7, 512, 1, 1)
    assert sd["features.1.10.weight"].shape == (256, 128, 3, 3)


# --- decoding --------------------------------------------------------------------------------

# peaks in heatmap pixels, including next to and just beyond the outermost cell centres
PEAKS = [(0.2, 0.3), (31 - 0.3, 23 - 0.2), (-0.4, 5.5), (10.37, 23.45), (15.5, 11.5), (31.4, 0.0), (7.77, 12.13)]


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0, 3.0])
def test_quadratic_decode_recovers_gaussian_peaks_to_subpixel(sigma):
    uv = torch.tensor([PEAKS], dtype=torch.float32)  # (1, K, 2)
    probs = _gaussian_maps(uv, (32, 24), sigma, amplitude=0.9)
    uv_p, conf = decode_heatmaps(probs)
    uv_l, conf_l = decode_heatmaps(torch.logit(probs.clamp_min(1e-30).double()).float(), logits=True)
    assert (uv_p - uv).abs().max() < 1e-3
    assert (uv_l - uv).abs().max() < 1e-3
    assert ((conf > 0) & (conf <= 0.9 + 1e-6)).all() and torch.allclose(conf, conf_l, atol=1e-5)
    sharpness = peak_sharpness(probs)
    assert torch.allclose(sharpness, torch.full_like(sharpness, 1 / sigma**2), rtol=1e-3)


def test_quadratic_decode_handles_saturated_logits():
    # Logits far beyond float32 sigmoid saturation (p == 1.0 in several cells) still decode to
    # sub-cell accuracy (log p ~ -exp(-z) is not quadratic, so not exactly).
    uv = torch.tensor([[[12.3, 7.6]]])
    u = torch.arange(32.0)
    v = torch.arange(24.0)[:, None]
    logits = (40.0 - ((u - 12.3) ** 2 + (v - 7.6) ** 2) / 2.0)[None, None]
    assert (torch.sigmoid(logits) == 1.0).sum() > 1
    uv_hat, conf = decode_heatmaps(logits, logits=True)
    assert (uv_hat - uv).abs().max() < 0.1 and conf.item() == 1.0


def test_decode_methods_and_soft_argmax():
    uv = torch.tensor([[[15.0, 11.0], [8.0, 9.0]]])
    probs = _gaussian_maps(uv, (32, 24), 1.5)
    uv_arg, _ = decode_heatmaps(probs, method="argmax")
    assert torch.equal(uv_arg, uv)
    # symmetric, non-truncated peaks: soft-argmax is exact (beta large enough to suppress background)
    uv_soft, _ = decode_heatmaps(probs, method="soft_argmax", beta=50.0)
    assert (uv_soft - uv).abs().max() < 1e-3
    with pytest.raises(ValueError, match="decode method"):
        decode_heatmaps(probs, method="dsnt")


def test_soft_argmax_gradcheck():
    scores = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: soft_argmax_2d(s, beta=2.0), (scores,))


def test_heatmap_input_coordinate_maps():
    # the centre of heatmap cell (0, 0) at stride 4 is the centre of the 4x4 input block: 1.5
    assert heatmap_to_input_coords(torch.zeros(2), 4).tolist() == [1.5, 1.5]
    assert input_to_heatmap_coords(np.array([-0.5, 3.5]), 4).tolist() == [-0.5, 0.5]  # block edges
    rng = np.random.default_rng(0)
    uv = rng.uniform(-5, 100, size=(3, 7, 2))
    for stride in (4, 8, (4, 2.5)):
        back = input_to_heatmap_coords(heatmap_to_input_coords(uv, stride), stride)
        np.testing.assert_allclose(back, uv, atol=1e-12)
        t = torch.from_numpy(uv)
        expected = torch.from_numpy(heatmap_to_input_coords(uv, stride))
        torch.testing.assert_close(heatmap_to_input_coords(t, stride), expected)
    assert heatmap_to_input_coords(np.array([1.0, 1.0]), (4, 2)).tolist() == [5.5, 2.5]


def test_render_gaussian_heatmaps_targets():
    uv_in = torch.tensor([[[41.5, 21.5], [float("nan"), float("nan")], [-60.0, 10.0]]])  # (B=1, K=3, 2)
    visible = torch.tensor([[True, False, True]])
    maps = render_gaussian_heatmaps(uv_in, visible, (32, 24), 4, 2.0)
    assert maps.shape == (1, 3, 24, 32) and torch.isfinite(maps).all()
    # 41.5 -> heatmap u = (41.5 + 0.5) / 4 - 0.5 = 10, v = 5: the peak cell, value 1
    assert maps[0, 0].argmax().item() == 5 * 32 + 10 and maps[0, 0, 5, 10].item() == pytest.approx(1.0)
    assert maps[0, 1].abs().max() == 0  # invisible
    assert maps[0, 2].max() < 1e-6  # far outside the map
    uv_hat, _ = decode_heatmaps(maps[:, :1])
    torch.testing.assert_close(heatmap_to_input_coords(uv_hat, 4), uv_in[:, :1])


# --- checkpoints -----------------------------------------------------------------------------

def _perturb_batchnorm(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name,overrides", [("ctrnet_slim", TINY_CTRNET), ("belief_heindl", TINY_BELIEF)])
def test_checkpoint_round_trip_with_weights_only(tmp_path, name, overrides):
    model, config = build_model(name, **overrides)
    _perturb_batchnorm(model)
    extra = {"epoch": 3, "keypoint_names": ["a", "b", "c"], "metrics": {"pck": 0.9}, "step_lr": torch.tensor(1e-3)}
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, model, config, extra)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data only
    assert raw["arch"] == name and raw["config"] == dataclasses.asdict(config)
    loaded, config2, extra2 = load_checkpoint(path)
    assert config2 == config and type(config2) is type(config) and loaded.arch == name
    assert not loaded.training
    assert extra2.keys() == extra.keys() and extra2["metrics"] == {"pck": 0.9}
    assert extra2["keypoint_names"] == ["a", "b", "c"] and torch.equal(extra2["step_lr"], extra["step_lr"])
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["heatmaps"], model.eval()(x)["heatmaps"], rtol=0, atol=0)


def test_checkpoint_save_rejects_non_plain_extra(tmp_path):
    model, config = build_model("ctrnet_slim", **TINY_CTRNET)
    with pytest.raises(TypeError, match="plain"):
        save_checkpoint(tmp_path / "m.pt", model, config, {"array": np.zeros(3)})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path / "m.pt", model, config, {"state_dict": {}})
    assert not list(tmp_path.iterdir())  # nothing half-written


class _NotPlain:
    pass


def test_bad_model_files_raise_model_file_error(tmp_path):
    model, config = build_model("ctrnet_slim", **TINY_CTRNET)
    good = tmp_path / "good.pt"
    save_checkpoint(good, model, config)
    data = good.read_bytes()

    cases = {}
    cases["garbage"] = b"\x00\x01not a checkpoint" * 50
    cases["truncated"] = data[: len(data) // 2]
    cases["empty"] = b""
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"weights": {}}, tmp_path / "missing_keys")
    torch.save([1, 2, 3], tmp_path / "not_a_dict")
    torch.save({"arch": "ctrnet_resnet101", "config": {}, "state_dict": {}}, tmp_path / "unknown_arch")
    torch.save({"arch": "ctrnet_slim", "config": {"num_keypoints": -1}, "state_dict": {}}, tmp_path / "bad_config")
    torch.save({"arch": "ctrnet_slim", "config": {"colour": 1}, "state_dict": {}}, tmp_path / "unknown_field")
    torch.save({"arch": "ctrnet_slim", "config": {}, "state_dict": {}, "x": _NotPlain()}, tmp_path / "pickled_object")
    other, other_config = build_model("ctrnet_slim", **{**TINY_CTRNET, "num_keypoints": 4})
    torch.save({"arch": "ctrnet_slim", "config": dataclasses.asdict(config), "state_dict": other.state_dict()},
               tmp_path / "shape_mismatch")
    sd = dict(model.state_dict())
    sd.pop(next(iter(sd)))
    torch.save({"arch": "ctrnet_slim", "config": dataclasses.asdict(config), "state_dict": sd},
               tmp_path / "missing_weight")

    for path in sorted(tmp_path.iterdir()):
        if path == good:
            continue
        with pytest.raises(ModelFileError):
            load_checkpoint(path)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(ModelFileError, match="size mismatch"):
        load_checkpoint(tmp_path / "shape_mismatch")
    with pytest.raises(ModelFileError, match="unknown arch"):
        load_checkpoint(tmp_path / "unknown_arch")


# --- ONNX export -----------------------------------------------------------------------------

def _emulate_trained_output(model: nn.Module, final_conv: nn.Conv2d, images: torch.Tensor) -> None:
    """Rescale the last 1x1 convolution so that random-weight heatmaps have distinct peaks.

    An untrained model's maps are flat (CtRNet's prior bias) or near 0.5 (belief sigmoid), so its
    argmax and sub-pixel offsets are set by float32 rounding; a trained model's are not. Weights
    are scaled so that the logits vary with std 4 and peak at about 2 (probability 0.88).
    """
    _perturb_batchnorm(model)
    model.eval()
    with torch.no_grad():
        nn.init.normal_(final_conv.weight, std=1.0)
        final_conv.bias.zero_()
        captured = {}
        hook = final_conv.register_forward_hook(lambda mod, args, out: captured.setdefault("z", out))
        model(images)
        hook.remove()
        scale = 4.0 / captured["z"].std(dim=(0, 2, 3))
        final_conv.weight.mul_(scale.view(-1, 1, 1, 1))
        final_conv.bias.copy_(2.0 - (captured["z"] * scale.view(1, -1, 1, 1)).amax(dim=(0, 2, 3)))


def _check_single_file_and_card(report, path, has_mask):
    import onnx

    from ctrnet_ros.net.export import read_onnx_metadata

    assert report["exporter"] in ("dynamo", "torchscript") and report["opset"] == 18
    assert report["dynamic_batch"] and report["parity_batch_sizes"][:2] == [1, 3]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no external .data
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["keypoints", "confidence", "mask", "heatmaps"]
    card = read_onnx_metadata(path)
    assert card["ctrnet_ros.has_mask"] == ("true" if has_mask else "false")
    assert card["ctrnet_ros.num_keypoints"] == "3" and card["ctrnet_ros.heatmap_stride"] == "4"
    assert card["keypoint_names"] == '["a", "b", "c"]'


def test_onnx_export_ctrnet_tiny_parity(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from ctrnet_ros.net.export import export_onnx

    # stride-8 trunk: a smaller graph to export; the mask is still upsampled from stride 8 to 4
    model, config = build_model("ctrnet_slim", **TINY_CTRNET, trunk_stride=8)
    _emulate_trained_output(model, model.heatmap_out, torch.rand(4, 3, H, W))
    path = tmp_path / "onnx" / "ctrnet_tiny.onnx"
    model.train()
    report = export_onnx(model, path, config.input_size, metadata={"keypoint_names": ["a", "b", "c"]})
    assert model.training  # exported in eval mode, caller's mode restored
    _check_single_file_and_card(report, path, has_mask=True)
    assert report["parity_keypoints_checked"] >= report["parity_keypoints_total"] // 3
    assert report["parity_max_abs"] < 1e-4
    assert report["parity_max_abs_by_output"]["heatmaps"] < 1e-4
    assert report["parity_max_abs_by_output"]["mask"] < 1e-4


def test_onnx_export_belief_tiny_parity(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from ctrnet_ros.net.export import export_onnx

    # A seed whose random belief maps peak inside the map: with others, zero padding puts the
    # maximum on the border with a monotonic profile, which has no sub-pixel peak to compare.
    torch.manual_seed(2)
    model, config = build_model("belief_heindl", **TINY_BELIEF)
    _emulate_trained_output(model, model.stages[-1][-2], torch.rand(4, 3, H, W))
    path = tmp_path / "onnx" / "belief_tiny.onnx"
    report = export_onnx(model, path, config.input_size, metadata={"keypoint_names": ["a", "b", "c"]}, atol=1e-3)
    _check_single_file_and_card(report, path, has_mask=False)
    assert report["parity_max_abs_by_output"]["heatmaps"] < 1e-4
    assert report["parity_max_abs_by_output"]["mask"] == 0.0
    assert report["parity_keypoints_checked"] >= report["parity_keypoints_total"] // 3
    # Random-weight belief maps have lopsided, non-Gaussian peaks whose sub-pixel offsets amplify
    # float32 rounding: torch itself differs from a float64 run by up to ~7e-5 px here, and ORT
    # by ~8e-5 px. So 1e-3 px, not 1e-4, leaves room for other CPUs' kernels; the decoder graph's
    # own exactness is checked on Gaussian peaks below, at 1e-4 px.
    assert report["parity_max_abs"] < 1e-3


class _PooledImageHeatmaps(nn.Module):
    """Stand-in network whose heatmaps are the image, 4x4-average-pooled (probabilities, stride 4)."""

    num_keypoints = 3
    heatmap_stride = 4
    heatmaps_are_logits = False
    has_mask_head = False

    def forward(self, image: torch.Tensor) -> dict:
        return {"heatmaps": F.avg_pool2d(image, 4)}


def test_onnx_decoder_parity_and_pixel_convention_on_gaussian_peaks(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from ctrnet_ros.net.export import export_onnx

    generator = torch.Generator().manual_seed(1)
    uv = torch.rand(5, 3, 2, generator=generator) * torch.tensor([W - 1.0, H - 1.0])  # anywhere, borders included
    uv[0, 0] = torch.tensor([0.3, H - 1.2])
    sigma_in = 6.0
    u = torch.arange(W, dtype=torch.float32)
    v = torch.arange(H, dtype=torch.float32)[:, None]
    d2 = (u - uv[..., 0, None, None]) ** 2 + (v - uv[..., 1, None, None]) ** 2  # (5, 3, H, W)
    images = 0.9 * torch.exp(-d2 / (2 * sigma_in**2))
    net = KeypointNet(_PooledImageHeatmaps())
    report = export_onnx(net, tmp_path / "decoder.onnx", (W, H), parity_batch_sizes=(), parity_images=images)
    assert report["parity_keypoints_checked"] == report["parity_keypoints_total"] == 15
    assert report["parity_max_abs"] < 1e-4
    # Input pixel (u, v) is averaged into cell ((v + 0.5) / 4 - 0.5, ...): decoded input-pixel
    # keypoints land on the blob centres (box-filtered Gaussians are nearly Gaussian).
    with torch.no_grad():
        keypoints = net(images)["keypoints"]
    assert (keypoints - uv).abs().max() < 0.1


def test_checkpoint_refuses_str_subclasses(tmp_path):
    """torch.__version__ is a str subclass: it passed the plain-data check, saved, and then failed to load."""
    model, config = build_model("ctrnet_slim", **TINY_CTRNET)
    with pytest.raises(TypeError, match="plain"):
        save_checkpoint(tmp_path / "x.pt", model, config, {"torch": torch.__version__})
    save_checkpoint(tmp_path / "y.pt", model, config, {"torch": str(torch.__version__)})
    assert load_checkpoint(tmp_path / "y.pt")[2]["torch"] == str(torch.__version__)
