"""Supervised pretraining: data/augmentation consistency, losses, exact resume, metrics.

Uses a tiny dataset rendered in the test with ``write_dataset`` (16 frames at 64x48, about 5 s)
and a tiny ``ctrnet_slim`` (width 8); everything on CPU, seeded, float32.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ctrnet_ros.core.camera import PinholeCamera  # noqa: E402
from ctrnet_ros.eval.metrics import add_auc, add_distances  # noqa: E402
from ctrnet_ros.net.decode import decode_heatmaps, heatmap_to_input_coords  # noqa: E402
from ctrnet_ros.net.registry import build_model, load_checkpoint  # noqa: E402
from ctrnet_ros.train.config import PRESETS, AugmentConfig, TrainConfig, config_from_dict, config_to_dict  # noqa: E402
from ctrnet_ros.train.data import (KeypointTrainDataset, StepBatchSampler, motion_blur_kernel,  # noqa: E402
                                   open_datasets, photometric_augment, prepare_sample)
from ctrnet_ros.train.export_cli import _training_summary  # noqa: E402
from ctrnet_ros.train.losses import model_losses  # noqa: E402
from ctrnet_ros.train.metrics import KeypointMetrics, keypoint_errors, pck, pose_from_keypoints  # noqa: E402
from ctrnet_ros.train.pretrain import TrainingError, lr_at, pretrain  # noqa: E402

SIZE = (64, 48)
TINY_MODEL = {"trunk_width": 8, "head_channels": 16, "mask_channels": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from ctrnet_ros.sim.dataset import write_dataset

    out = tmp_path_factory.mktemp("sim") / "tiny"
    write_dataset(out, num_frames=16, seed=3, width=SIZE[0], height=SIZE[1], shard_size=8, progress=False)
    return out


def _config(data, out, **changes) -> TrainConfig:
    base = TrainConfig(arch="ctrnet_slim", model=TINY_MODEL, input_size=SIZE, data=(str(data),), batch_size=4,
                       steps=6, warmup_steps=2, coord_start_step=2, lr=5e-3, cpu_bf16=False, num_workers=0,
                       out_dir=str(out), checkpoint_every=100, log_every=1, seed=7)
    return base.replace(**changes)


# --- data --------------------------------------------------------------------------------------

def _dot_frame(width=100, height=80, uv=(37.3, 52.6), sigma=1.5):
    """A synthetic camera frame: black image with a bright Gaussian dot at ``uv`` (one keypoint)."""
    u = np.arange(width)[None, :]
    v = np.arange(height)[:, None]
    dot = np.exp(-((u - uv[0]) ** 2 + (v - uv[1]) ** 2) / (2 * sigma**2))
    rgb = np.repeat((40 + 200 * dot)[..., None], 3, axis=2).astype(np.uint8)
    return {
        "rgb": rgb, "mask": dot > 0.5,
        "K": np.array([[90.0, 0, width / 2 - 0.5], [0, 90.0, height / 2 - 0.5], [0, 0, 1]]),
        "keypoints_uv": np.array([uv], dtype=np.float64), "in_image": np.array([True]), "visible": np.array([True]),
        "T_camera_base": np.eye(4), "keypoints_base": np.zeros((1, 3)),
    }


def _dot_centre(image: np.ndarray) -> np.ndarray:
    """Sub-pixel centre of the brightest blob of an (H, W) image: weighted centroid above half its height."""
    background = np.median(image)
    peak = np.unravel_index(np.argmax(image), image.shape)
    y0, y1 = max(peak[0] - 4, 0), min(peak[0] + 5, image.shape[0])
    x0, x1 = max(peak[1] - 4, 0), min(peak[1] + 5, image.shape[1])
    win = image[y0:y1, x0:x1] - background
    win = np.where(win > 0.5 * win.max(), win, 0.0)
    ys, xs = np.mgrid[y0:y1, x0:x1]
    return np.array([(xs * win).sum() / win.sum(), (ys * win).sum() / win.sum()])


def test_augmentation_keeps_keypoints_on_the_image_content():
    frame = _dot_frame()
    augment = AugmentConfig(geometric_prob=1.0, scale_range=(0.7, 1.5), translate_frac=0.1, noise_prob=0.0)
    checked = 0
    for seed in range(25):
        sample = prepare_sample(frame, input_size=SIZE, heatmap_stride=4, sigma=1.0, augment=augment,
                                rng=np.random.default_rng(seed))
        assert sample["image"].shape == (3, SIZE[1], SIZE[0]) and sample["image"].dtype == torch.float32
        if sample["keypoint_weight"][0] == 0:
            assert float(sample["heatmaps"][0].max()) == 0.0  # pushed out of the crop: "not here"
            continue
        kp = sample["keypoints"][0].numpy()
        found = _dot_centre(sample["image"].numpy().mean(axis=0))
        assert np.linalg.norm(found - kp) < 1.0, (seed, found, kp)
        # the Gaussian target peaks at the same keypoint (exact with the quadratic decoder)
        uv_hm, _ = decode_heatmaps(sample["heatmaps"][None].double(), logits=False)
        np.testing.assert_allclose(heatmap_to_input_coords(uv_hm, 4)[0, 0].numpy(), kp, atol=0.05)
        checked += 1
    assert checked >= 15


def test_camera_augmentation_moves_no_keypoint():
    """White balance, gamma and the (centred) motion blur change pixels, never where the dot is."""
    frame = _dot_frame(sigma=2.0)
    augment = dataclasses.replace(AugmentConfig.camera(), geometric_prob=0.0, noise_prob=0.0, jpeg_prob=0.0,
                                  motion_blur_prob=1.0, motion_blur_px=(4.0, 8.0))
    kernel = motion_blur_kernel(6.0, 0.7)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1])  # point-symmetric
    assert kernel.sum() == pytest.approx(1.0)
    plain = prepare_sample(frame, input_size=SIZE, heatmap_stride=4, sigma=1.0, augment=None, rng=None)
    for seed in range(10):
        sample = prepare_sample(frame, input_size=SIZE, heatmap_stride=4, sigma=1.0, augment=augment,
                                rng=np.random.default_rng(seed))
        assert not torch.allclose(sample["image"], plain["image"])
        found = _dot_centre(sample["image"].numpy().mean(axis=0))
        assert np.linalg.norm(found - sample["keypoints"][0].numpy()) < 0.5, (seed, found)


def test_older_augment_configs_keep_their_draws():
    """The camera effects are drawn after the older ones and only when enabled: old configs reproduce."""
    image = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    a = photometric_augment(image, np.random.default_rng(3), AugmentConfig())
    b = photometric_augment(image, np.random.default_rng(3), AugmentConfig(white_balance=0.0, motion_blur_prob=0.0))
    np.testing.assert_array_equal(a, b)
    c = photometric_augment(image, np.random.default_rng(3), AugmentConfig(white_balance=0.2))
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="white_balance"):
        AugmentConfig(white_balance=1.5)


def test_without_augmentation_the_sample_is_the_estimators_letterbox():
    frame = _dot_frame(width=100, height=80)  # 5:4 into 4:3: letterbox with padding
    sample = prepare_sample(frame, input_size=SIZE, heatmap_stride=4, sigma=1.0, augment=None, rng=None)
    tf = PinholeCamera(K=frame["K"], width=100, height=80).letterbox_transform(*SIZE)
    np.testing.assert_allclose(sample["transform"].numpy(), [tf.a_x, tf.b_x, tf.a_y, tf.b_y])
    expected = tf.apply_image(frame["rgb"]).astype(np.float32) / 255.0
    np.testing.assert_allclose(sample["image"].numpy().transpose(1, 2, 0), expected, atol=1e-6)
    np.testing.assert_allclose(sample["keypoints"][0].numpy(), tf.apply_coords(frame["keypoints_uv"])[0], atol=1e-5)


def test_keypoint_leaving_the_crop_becomes_invisible():
    frame = _dot_frame(uv=(2.0, 3.0))  # near the top-left corner
    augment = AugmentConfig(geometric_prob=1.0, scale_range=(3.0, 3.0), translate_frac=0.0)  # zoom into the centre
    sample = prepare_sample(frame, input_size=SIZE, heatmap_stride=4, sigma=1.0, augment=augment,
                            rng=np.random.default_rng(0))
    assert sample["keypoint_weight"][0] == 0 and sample["heatmap_weight"][0] == 1
    assert float(sample["heatmaps"].abs().max()) == 0.0


def test_samples_are_deterministic_per_seed_epoch_index(tiny_data):
    ds = KeypointTrainDataset(open_datasets([tiny_data]), input_size=SIZE, heatmap_stride=4, sigma=1.5,
                              augment=AugmentConfig(), seed=1)
    a, b, c = ds[(0, 5)], ds[(0, 5)], ds[(1, 5)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["heatmaps"], b["heatmaps"])
    assert not torch.equal(a["image"], c["image"])
    assert a["heatmaps"].shape == (7, SIZE[1] // 4, SIZE[0] // 4) and a["mask"].shape == (1, SIZE[1] // 4, SIZE[0] // 4)


def test_step_batches_depend_only_on_the_step():
    full = StepBatchSampler(10, 4, seed=3, start_step=0, end_step=6)
    tail = StepBatchSampler(10, 4, seed=3, start_step=4, end_step=6)
    assert list(full)[4:] == list(tail)
    stream = [k for batch in full for k in batch]
    for epoch in (0, 1):  # every epoch is a permutation of the frames
        assert sorted(i for e, i in stream if e == epoch) == list(range(10))


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1, steps=110)
    assert lr_at(0, cfg, 110) == pytest.approx(0.1) and lr_at(9, cfg, 110) == pytest.approx(1.0)
    assert lr_at(10, cfg, 110) == pytest.approx(1.0) and lr_at(60, cfg, 110) == pytest.approx(0.55)
    assert lr_at(110, cfg, 110) == pytest.approx(0.1)


def test_config_round_trip_and_presets():
    for cfg in PRESETS.values():
        assert config_from_dict(config_to_dict(cfg)) == cfg
        build_model(cfg.arch, input_size=cfg.input_size, **cfg.model)  # the presets' models exist
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        config_from_dict({"nope": 1})


# --- training ------------------------------------------------------------------------------------

def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_data):
    torch.manual_seed(0)
    cfg = _config(tiny_data, "unused")
    model, _ = build_model("ctrnet_slim", num_keypoints=7, input_size=SIZE, **TINY_MODEL)
    ds = KeypointTrainDataset(open_datasets([tiny_data]), input_size=SIZE, heatmap_stride=4, sigma=1.5)
    batch = torch.utils.data.default_collate([ds[i] for i in range(8)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = model_losses(model, model(batch["image"]), batch, cfg, use_coord=False)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def _log_losses(path) -> dict[int, str]:
    import csv

    with open(path, newline="") as f:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(f) if r["loss"]}


def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_data, tmp_path):
    full = pretrain(_config(tiny_data, tmp_path / "full"), progress=False)
    assert full["step"] == 6 and not full["stopped_early"]

    part = pretrain(_config(tiny_data, tmp_path / "split"), stop_after=3, progress=False)
    assert part["step"] == 3 and part["stopped_early"]
    _, _, extra = load_checkpoint(tmp_path / "split" / "last.pt")  # weights_only=True inside
    assert extra["step"] == 3 and extra["keypoint_names"][0] == "panda_link0" and extra["input_size"] == list(SIZE)
    assert "optimizer" in extra and isinstance(extra["rng"]["torch"], torch.Tensor)

    rest = pretrain(_config(tiny_data, tmp_path / "split"), resume=True, progress=False)
    assert rest["step"] == 6
    log_full, log_split = _log_losses(tmp_path / "full" / "log.csv"), _log_losses(tmp_path / "split" / "log.csv")
    assert sorted(log_split) == [1, 2, 3, 4, 5, 6]
    assert log_split == log_full  # same losses at every step, including the first after resuming
    m_full, _, _ = load_checkpoint(tmp_path / "full" / "last.pt")
    m_split, _, _ = load_checkpoint(tmp_path / "split" / "last.pt")
    for (name, a), b in zip(m_full.state_dict().items(), m_split.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_refuses_to_change_what_is_learned(tiny_data, tmp_path):
    pretrain(_config(tiny_data, tmp_path, steps=2), progress=False)
    with pytest.raises(TrainingError, match="cannot change"):
        pretrain(_config(tiny_data, tmp_path, steps=2, lr=1.0), resume=True, explicit_fields={"lr"}, progress=False)


def test_warm_start_takes_the_weights_and_records_the_chain(tiny_data, tmp_path):
    first = pretrain(_config(tiny_data, tmp_path / "a", steps=3), progress=False)
    second = pretrain(_config(tiny_data, tmp_path / "b", init=first["last"], steps=4), stop_after=0, progress=False)
    assert second["step"] == 0  # nothing trained yet: the weights are exactly the init's
    m_a, _, _ = load_checkpoint(first["last"])
    m_b, _, extra = load_checkpoint(second["last"])
    for (name, a), b in zip(m_a.state_dict().items(), m_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert extra["init_from"]["step"] == 3 and extra["init_from"]["checkpoint"] == first["last"]
    third = pretrain(_config(tiny_data, tmp_path / "b", init=first["last"], steps=4), resume=True, progress=False)
    assert third["step"] == 4
    _, _, extra = load_checkpoint(third["last"])
    summary = _training_summary(extra)
    assert [c["step"] for c in summary["warm_start_from"]] == [3]
    assert summary["total_images_seen_incl_warm_start"] == (3 + 4) * 4


def test_warm_start_refuses_another_model_config(tiny_data, tmp_path):
    first = pretrain(_config(tiny_data, tmp_path / "a", steps=1), progress=False)
    other = {**TINY_MODEL, "head_channels": TINY_MODEL.get("head_channels", 16) * 2}
    with pytest.raises(TrainingError, match="model config"):
        pretrain(_config(tiny_data, tmp_path / "b", init=first["last"], model=other), progress=False)


def test_warm_start_may_add_skip_connections(tiny_data, tmp_path):
    first = pretrain(_config(tiny_data, tmp_path / "a", steps=2), progress=False)
    skip_model = {**TINY_MODEL, "skip_connections": True}
    second = pretrain(_config(tiny_data, tmp_path / "b", init=first["last"], model=skip_model, steps=2),
                      stop_after=0, progress=False)
    m_a, _, _ = load_checkpoint(first["last"])
    m_b, config_b, _ = load_checkpoint(second["last"])
    assert config_b.skip_connections
    x = torch.rand(2, 3, SIZE[1], SIZE[0])
    with torch.no_grad():
        out_a, out_b = m_a(x), m_b(x)
    assert torch.equal(out_a["heatmaps"], out_b["heatmaps"]) and torch.equal(out_a["mask_logits"], out_b["mask_logits"])
    # the other direction (dropping layers) is refused
    with pytest.raises(TrainingError, match="model config"):
        pretrain(_config(tiny_data, tmp_path / "c", init=second["last"]), progress=False)


def test_validation_writes_metrics_curves_and_best(tiny_data, tmp_path):
    cfg = _config(tiny_data, tmp_path, steps=4, val=str(tiny_data), val_every=2, val_max_frames=8)
    summary = pretrain(cfg, progress=False)
    for key in ("pck2", "pck5", "pck10", "median_px", "mask_iou", "add_auc", "pose_success"):
        assert key in summary["val_metrics"]
    assert summary["val_metrics"]["frames"] == 8
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "curves.png").stat().st_size > 1000
    from ctrnet_ros.inference import load_detector

    det = load_detector(tmp_path / "best.pt")  # the checkpoint runs in the node's torch backend
    assert det.input_size == SIZE and len(det.keypoint_names) == 7


# --- metrics -------------------------------------------------------------------------------------

def test_add_auc_of_perfect_and_failed_estimates():
    assert add_auc([0.0, 0.0, 0.0]) == pytest.approx(100.0)
    assert add_auc([math.inf, float("nan")]) == 0.0
    assert add_auc([0.05]) == pytest.approx(50.0)
    assert add_auc([0.0, math.inf]) == pytest.approx(50.0)
    assert add_auc([0.2]) == 0.0
    assert math.isnan(add_auc([]))


def test_add_distances():
    points = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    T = np.eye(4)
    T_shift = np.eye(4)
    T_shift[:3, 3] = [0.0, 0.03, 0.04]
    assert add_distances(T, T, points) == 0.0
    assert add_distances(T_shift, T, points) == pytest.approx(0.05)
    d = add_distances([T_shift, None], np.stack([T, T]), points)
    assert d[0] == pytest.approx(0.05) and d[1] == math.inf


def test_pck_and_keypoint_errors():
    gt = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0], [50.0, 50.0]])
    pred = gt + np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 6.0], [0.0, 0.0], [np.nan, np.nan]])
    valid = np.array([True, True, True, False, True])
    err = keypoint_errors(pred, gt, valid)
    np.testing.assert_allclose(err[:3], [1.0, 3.0, 6.0])
    assert np.isnan(err[3]) and err[4] == math.inf  # not counted; a miss
    assert pck(err, 2) == pytest.approx(25.0) and pck(err, 5) == pytest.approx(50.0)
    assert pck(err, 10) == pytest.approx(75.0)


def test_pose_from_perfect_keypoints_and_metrics_accumulator():
    camera = PinholeCamera.from_fov(width=640, height=480, fovy_deg=50.0)
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.4, 0.4, (7, 3)) + [0.0, 0.0, 0.5]
    T = np.eye(4)
    T[:3, 3] = [0.05, -0.1, 1.5]
    uv = camera.project_from(T, points)
    T_est = pose_from_keypoints(uv, np.ones(7), points, camera)
    assert T_est is not None and add_distances(T_est, T, points) < 1e-6
    assert pose_from_keypoints(uv, np.zeros(7), points, camera) is None  # nothing confident: failure
    metrics = KeypointMetrics()
    metrics.update(pred_uv=uv, gt_uv=uv, gt_valid=np.ones(7, bool), T_est=T_est, T_gt=T, keypoints_base=points,
                   mask_pred=np.ones((4, 4)), mask_gt=np.ones((4, 4)))
    metrics.update(pred_uv=uv + 3.0, gt_uv=uv, gt_valid=np.ones(7, bool), T_est=None, T_gt=T, keypoints_base=points)
    m = metrics.compute()
    assert m["pck2"] == pytest.approx(50.0) and m["pck10"] == pytest.approx(100.0)
    assert m["add_auc"] == pytest.approx(50.0, abs=1e-3) and m["pose_success"] == pytest.approx(50.0)
    assert m["mask_iou"] == pytest.approx(1.0) and m["frames"] == 2
