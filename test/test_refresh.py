"""Self-supervised refresh: the loss chain (keypoints -> differentiable PnP -> soft render) and the run.

The Panda scene is synthetic and seeded; the silhouette renderer's decimated meshes come from the
shared mesh cache (built on first use). One torch thread, small images: some seconds on 2 cores.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ctrnet_ros.core import se3
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.core.robot import KeypointSpec, RobotModel
from ctrnet_ros.net.decode import render_gaussian_heatmaps
from ctrnet_ros.net.registry import build_model, load_checkpoint, save_checkpoint
from ctrnet_ros.train.refresh import RefreshConfig, RefreshError, refresh, self_supervised_losses
from ctrnet_ros.train.silhouette import RobotMeshSet, SilhouetteRenderer, link_pose_tensor

SIZE = (160, 120)  # network input (W, H)
STRIDE = 4
CAMERA = PinholeCamera.from_fov(width=SIZE[0], height=SIZE[1], fovy_deg=50.0)
CONFIGS = [
    {"panda_joint1": 0.3, "panda_joint2": -0.4, "panda_joint3": 0.1, "panda_joint4": -2.0, "panda_joint5": 0.2,
     "panda_joint6": 1.9, "panda_joint7": 0.7, "panda_finger_joint1": 0.03},
    {"panda_joint1": -0.6, "panda_joint2": 0.3, "panda_joint3": -0.2, "panda_joint4": -1.4, "panda_joint5": -0.4,
     "panda_joint6": 1.4, "panda_joint7": -0.3, "panda_finger_joint1": 0.02},
]
T_CAMERA_BASE = se3.invert_transform(se3.look_at_optical(np.array([1.5, 0.6, 0.9]), np.array([0.1, 0.0, 0.45])))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def panda():
    spec = KeypointSpec.builtin("panda")
    return spec, RobotModel.from_spec(spec)


@pytest.fixture(scope="module")
def renderer(panda):
    return SilhouetteRenderer(RobotMeshSet.from_robot(panda[1], max_faces=3000), sigma=0.4)


def _geometry(panda, renderer):
    spec, robot = panda
    X = torch.from_numpy(np.stack([robot.keypoints_base(spec, q) for q in CONFIGS]))  # (B, K, 3)
    links = link_pose_tensor(robot, CONFIGS, renderer.links)  # (B, L, 4, 4)
    uv = np.stack([CAMERA.project_from(T_CAMERA_BASE, x) for x in X.numpy()])  # (B, K, 2) input px
    return X, links, uv


def _exact_heatmaps(panda, renderer):
    """Keypoints base frame, link poses, heatmap logits peaked at the true projections, heatmap size."""
    X, links, uv = _geometry(panda, renderer)
    B, K = uv.shape[:2]
    hm_size = (SIZE[0] // STRIDE, SIZE[1] // STRIDE)
    probs = render_gaussian_heatmaps(torch.from_numpy(uv), torch.ones(B, K, dtype=torch.bool), hm_size, STRIDE,
                                     1.5).clamp(1e-4, 1 - 1e-4)
    return X, links, torch.logit(probs).float(), hm_size


def test_one_refresh_step_lowers_the_silhouette_loss(panda, renderer):
    """Keypoints a few pixels off give a pose whose render disagrees with the (correct) mask; one
    optimiser step on the heatmaps, through local soft-argmax, BPnP and the soft render, lowers it."""
    X, links, uv_true = _geometry(panda, renderer)
    B, K = uv_true.shape[:2]
    hm_size = (SIZE[0] // STRIDE, SIZE[1] // STRIDE)
    rng = np.random.default_rng(0)
    uv_off = uv_true + rng.normal(0.0, 2.5, uv_true.shape)
    # stand-in network outputs: Gaussian heatmap logits at the perturbed keypoints, and the mask a
    # good segmentation would predict (the render at the true pose, as logits)
    probs = render_gaussian_heatmaps(torch.from_numpy(uv_off), torch.ones(B, K, dtype=torch.bool), hm_size, STRIDE,
                                     1.5).clamp(1e-4, 1 - 1e-4)
    heat = torch.logit(probs).float().requires_grad_(True)
    K_mask = torch.from_numpy(np.stack([CAMERA.transformed(CAMERA.resize_transform(*hm_size)).K] * B)).float()
    with torch.no_grad():
        T_true = torch.from_numpy(np.stack([T_CAMERA_BASE] * B)).float()
        mask = renderer(T_true, links.float(), K_mask, image_size=hm_size).clamp(1e-4, 1 - 1e-4)
    mask_logits = torch.logit(mask)[:, None].requires_grad_(True)
    cfg = RefreshConfig(render_sigma_px=0.4, max_rmse_px=50.0)

    def losses():
        return self_supervised_losses(heat, mask_logits, keypoints_base=X, T_base_link=links, cameras=[CAMERA] * B,
                                      renderer=renderer, config=cfg, heatmap_stride=STRIDE, heatmaps_are_logits=True,
                                      render_size=(80, 60))

    before = losses()
    assert bool(before.ok.all()) and before.silhouettes is not None
    err_before = max(se3.translation_error(T, T_CAMERA_BASE) for T in before.T_camera_base.detach().numpy())
    opt = torch.optim.SGD([heat], lr=200.0)
    before.silhouette.backward()
    assert heat.grad is not None and float(heat.grad.abs().sum()) > 0, "no gradient reached the heatmaps"
    opt.step()
    after = losses()
    s0, s1 = float(before.silhouette.detach()), float(after.silhouette.detach())
    assert s1 < s0, (s0, s1)
    err_after = max(se3.translation_error(T, T_CAMERA_BASE) for T in after.T_camera_base.detach().numpy())
    assert err_after < err_before, "the step should also move the pose towards the truth"
    # the mask-refinement term trains the segmentation towards the render, not the keypoints
    assert after.mask_refine.requires_grad and float(after.mask_refine.detach()) > 0


def test_no_usable_pose_gives_a_zero_loss_that_still_reaches_every_output(panda, renderer):
    X, links, _ = _geometry(panda, renderer)
    B, K = X.shape[:2]
    heat = torch.zeros(B, K, SIZE[1] // STRIDE, SIZE[0] // STRIDE, requires_grad=True)  # flat maps: no keypoints
    mask_logits = torch.zeros(B, 1, SIZE[1] // STRIDE, SIZE[0] // STRIDE, requires_grad=True)
    t = self_supervised_losses(heat, mask_logits, keypoints_base=X, T_base_link=links, cameras=[CAMERA] * B,
                               renderer=renderer, config=RefreshConfig(max_rmse_px=0.01), heatmap_stride=STRIDE,
                               heatmaps_are_logits=True, render_size=(80, 60))
    assert not bool(t.ok.any()) and float(t.loss) == 0.0
    t.loss.backward()
    assert heat.grad is not None and mask_logits.grad is not None


def test_teacher_mask_replaces_the_predicted_mask_as_the_silhouette_target(panda, renderer):
    """``target_mask`` (the frozen initial model's mask) is what the render must match; the mask being
    trained then has no say in the silhouette loss, so it cannot drift with the keypoints."""
    X, links, heat, hm_size = _exact_heatmaps(panda, renderer)
    B = X.shape[0]
    K_mask = torch.from_numpy(np.stack([CAMERA.transformed(CAMERA.resize_transform(*hm_size)).K] * B)).float()
    T_true = torch.from_numpy(np.stack([T_CAMERA_BASE] * B)).float()
    good = torch.logit(renderer(T_true, links.float(), K_mask, image_size=hm_size).clamp(1e-4, 1 - 1e-4))[:, None]
    empty = torch.full_like(good, -9.0)

    def silhouette(mask_logits, target=None, confidence=0.0):
        return float(self_supervised_losses(
            heat, mask_logits, keypoints_base=X, T_base_link=links, cameras=[CAMERA] * B, renderer=renderer,
            config=RefreshConfig(max_rmse_px=50.0, target_confidence=confidence), heatmap_stride=STRIDE,
            heatmaps_are_logits=True, render_size=(80, 60), target_mask=target).silhouette)

    assert silhouette(empty, target=good) == pytest.approx(silhouette(good), rel=1e-6)
    assert silhouette(good, target=empty) > 1.5 * silhouette(good)  # an empty target: the robot is all error

    # target_confidence: pixels the target is unsure about do not count
    unsure = torch.zeros_like(good)  # p = 0.5 everywhere
    assert silhouette(good, unsure, confidence=0.5) == 0.0 and silhouette(good, unsure) > 0.0
    assert silhouette(good, empty, confidence=0.5) > 0.0


@dataclass
class _Sample:
    """What refresh() needs of a collected sample (see ctrnet_ros.collect.dataset.CollectedSample)."""

    rgb: np.ndarray
    camera: PinholeCamera
    joints: dict

    def image_rgb(self) -> np.ndarray:
        return self.rgb


def _tiny_init_checkpoint(path, spec, size=(128, 96)):
    """A small untrained ctrnet_slim checkpoint, as ctrnet-train writes one."""
    torch.manual_seed(0)
    model, cfg = build_model("ctrnet_slim", num_keypoints=len(spec.names), input_size=size, trunk_width=8,
                             head_channels=16, mask_channels=8)
    save_checkpoint(path, model, cfg, {"keypoint_names": spec.names, "input_size": list(size), "robot": "panda",
                                       "decode_method": "quadratic"})
    return path


def test_refresh_run_writes_a_loadable_model_and_curves(tmp_path, panda):
    spec, _ = panda
    init = _tiny_init_checkpoint(tmp_path / "init.pt", spec)
    cam = PinholeCamera.from_fov(width=256, height=192, fovy_deg=50.0)  # collected at 2x the input size
    rng = np.random.default_rng(1)
    samples = [_Sample(rng.integers(0, 255, (192, 256, 3), dtype=np.uint8), cam, q) for q in CONFIGS * 2]
    out = tmp_path / "run"
    config = RefreshConfig(init=str(init), out_dir=str(out), steps=3, batch_size=2, num_workers=0, log_every=1,
                           max_faces=2000, device="cpu")
    summary = refresh(config, samples=samples, progress=False)
    assert summary["step"] == 3 and not summary["stopped_early"]
    for name in ("refreshed.pt", "last.pt", "log.csv", "curves.png", "config.json"):
        assert (out / name).is_file(), name
    refreshed, _, extra = load_checkpoint(out / "refreshed.pt")
    assert extra["refresh"]["steps"] == 3 and extra["refresh"]["samples"] == 4
    assert extra["keypoint_names"] == spec.names and "refresh_optimizer" not in extra
    # resuming a finished run does nothing more; a longer run continues from step 3
    summary = refresh(config.replace(steps=4), resume=True, samples=samples, progress=False)
    assert summary["step"] == 4
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4]


def test_refresh_batchnorm_adaptation_and_freezing(tmp_path, panda):
    spec, _ = panda
    init = _tiny_init_checkpoint(tmp_path / "init.pt", spec)
    cam = PinholeCamera.from_fov(width=128, height=96, fovy_deg=50.0)
    rng = np.random.default_rng(2)
    samples = [_Sample(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), cam, q) for q in CONFIGS]

    def running_means(path):
        m = load_checkpoint(path)[0]
        return [b.running_mean.clone() for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]

    def run(name, **kw):
        refresh(RefreshConfig(init=str(init), out_dir=str(tmp_path / name), batch_size=2, num_workers=0,
                              max_faces=2000, device="cpu", **kw), samples=samples, progress=False)
        return running_means(tmp_path / name / "refreshed.pt")

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b))

    initial = running_means(init)
    assert same(run("frozen", steps=2, adapt_bn=False, freeze_bn=True), initial)
    assert not same(run("training_bn", steps=2, adapt_bn=False, freeze_bn=False), initial)
    adapted = run("adapted", steps=0, adapt_bn=True)  # AdaBN alone: statistics of the collected images
    assert not same(adapted, initial)
    assert same(run("adapted_then_trained", steps=2, adapt_bn=True, freeze_bn=True), adapted)
    with pytest.raises(RefreshError, match="mask_target"):
        refresh(RefreshConfig(init=str(init), out_dir=str(tmp_path / "bad"), mask_target="oracle"), samples=samples,
                progress=False)


def test_adapt_batchnorm_mixes_statistics_and_limits_itself_to_the_named_layers():
    from ctrnet_ros.train.refresh import adapt_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4))
    for bn in (net[1], net[4]):  # "training" statistics far from what the new images give
        bn.running_mean.fill_(5.0)
        bn.running_var.fill_(9.0)
    images = [{"image": torch.randn(3, 16, 16) * 2.0 + 1.0} for _ in range(8)]

    def adapted(**kw):
        m = copy.deepcopy(net)
        assert adapt_batchnorm(m, images, batch_size=4, device=torch.device("cpu"), **kw) == 8
        return m

    full, none = adapted(), adapted(mix=0.0)
    for i in (1, 4):
        assert torch.allclose(none[i].running_mean, net[i].running_mean)
        assert torch.allclose(none[i].running_var, net[i].running_var)
    half = adapted(mix=0.5)
    m0, v0, m1, v1 = net[1].running_mean, net[1].running_var, full[1].running_mean, full[1].running_var
    assert torch.allclose(half[1].running_mean, 0.5 * (m0 + m1))
    assert torch.allclose(half[1].running_var, 0.5 * (v0 + v1) + 0.25 * (m1 - m0) ** 2)  # the mixture's variance
    first = adapted(layers=["1"])
    assert torch.allclose(first[1].running_mean, full[1].running_mean)
    assert torch.equal(first[4].running_mean, net[4].running_mean) and first[4].momentum == net[4].momentum
    with pytest.raises(ValueError, match="match no BatchNorm layer"):
        adapted(layers=["trunk.layer9"])
    with pytest.raises(ValueError, match="adapt_bn_mix"):
        adapted(mix=1.5)


def test_refresh_refuses_bad_inputs_clearly(tmp_path, panda):
    with pytest.raises(RefreshError, match="no usable samples"):
        refresh(RefreshConfig(init=str(tmp_path / "x.pt"), out_dir=str(tmp_path / "r")), samples=[], progress=False)
    cam = PinholeCamera.from_fov(width=64, height=48, fovy_deg=50.0)
    with pytest.raises(RefreshError, match="cannot load the initial model"):
        refresh(RefreshConfig(init=str(tmp_path / "missing.pt"), out_dir=str(tmp_path / "r")),
                samples=[_Sample(np.zeros((48, 64, 3), np.uint8), cam, CONFIGS[0])], progress=False)


def test_agreement_weighting_ignores_renders_that_do_not_resemble_the_mask(panda, renderer):
    X, links, heat, hm_size = _exact_heatmaps(panda, renderer)
    B = X.shape[0]
    empty_mask = torch.full((B, 1, hm_size[1], hm_size[0]), -9.0)  # the "predicted" mask sees no robot at all

    def silhouette(agreement: bool) -> float:
        t = self_supervised_losses(heat, empty_mask, keypoints_base=X, T_base_link=links, cameras=[CAMERA] * B,
                                   renderer=renderer, config=RefreshConfig(agreement_weighting=agreement),
                                   heatmap_stride=STRIDE, heatmaps_are_logits=True, render_size=(80, 60))
        assert bool(t.ok.all())
        return float(t.silhouette.detach())

    assert silhouette(False) > 0.0 and silhouette(True) == 0.0


def test_ignore_links_removes_what_the_mask_misses_from_the_silhouette_loss(panda, renderer, tmp_path):
    """A mask that misses the gripper (as the model's does on shiny fingers) penalises a correct pose;
    with the gripper links ignored (their render, dilated) the correct pose costs almost nothing."""
    spec, robot = panda
    X, links, heat, hm_size = _exact_heatmaps(panda, renderer)
    B = X.shape[0]
    render_size = (80, 60)  # masks at the render's size: no resampling blur in the comparison
    K_mask = torch.from_numpy(np.stack([CAMERA.transformed(CAMERA.resize_transform(*render_size)).K] * B)).float()
    T_true = torch.from_numpy(np.stack([T_CAMERA_BASE] * B)).float()
    gripper = ("panda_hand", "panda_leftfinger", "panda_rightfinger")
    arm = [name for name in renderer.links if name not in gripper]
    meshes = RobotMeshSet.from_robot(robot, max_faces=3000)
    arm_renderer = SilhouetteRenderer(meshes.only(arm), sigma=0.4)
    with torch.no_grad():
        arm_only = arm_renderer(T_true, links.float(), K_mask, image_size=render_size)
        whole = renderer(T_true, links.float(), K_mask, image_size=render_size)
    full_mask = torch.logit(whole.clamp(1e-4, 1 - 1e-4))[:, None]
    no_gripper = torch.logit(arm_only.clamp(1e-4, 1 - 1e-4))[:, None]
    ignore = SilhouetteRenderer(meshes.only(gripper), sigma=0.4)

    def silhouette(mask_logits, ignore) -> float:
        t = self_supervised_losses(heat, mask_logits, keypoints_base=X, T_base_link=links, cameras=[CAMERA] * B,
                                   renderer=renderer, config=RefreshConfig(max_rmse_px=50.0), heatmap_stride=STRIDE,
                                   heatmaps_are_logits=True, render_size=render_size, ignore=ignore)
        assert bool(t.ok.all())
        return float(t.silhouette.detach())

    # the missing gripper costs the correct pose without ignore_links...
    cost = silhouette(no_gripper, None) - silhouette(full_mask, None)
    assert cost > 0.0
    # ...and (almost) nothing with it: whether the mask sees the gripper no longer matters
    assert abs(silhouette(no_gripper, ignore) - silhouette(full_mask, ignore)) < 0.05 * cost

    with pytest.raises(RefreshError, match="ignore_links"):
        refresh(RefreshConfig(init=str(_tiny_init_checkpoint(tmp_path / "init.pt", spec)), out_dir=str(tmp_path / "r"),
                              steps=1, ignore_links=("panda_tail",), device="cpu"),
                samples=[_Sample(np.zeros((96, 128, 3), np.uint8),
                                 PinholeCamera.from_fov(width=128, height=96, fovy_deg=50.0), CONFIGS[0])],
                progress=False)
