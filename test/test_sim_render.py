"""Synthetic data engine: MuJoCo renderer ground truth, determinism, visibility, datasets, CLI.

Small images (160x120 .. 320x240) and few frames keep this file at a few seconds per renderer on 2 CPU
cores. Meshes are converted once into the shared cache (build/sim_cache), keyed by content hash.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctrnet_ros.core import se3
from ctrnet_ros.core.camera import CameraModelError, PinholeCamera
from ctrnet_ros.core.robot import KeypointSpec, RobotModel
from ctrnet_ros.sim import scene as scene_mod
from ctrnet_ros.sim.dataset import SimDataset, generate_frame, write_dataset
from ctrnet_ros.sim.randomize import (DomainConfig, apply_image_effects, load_domain, sample_image_effects,
                                      smooth_joint_trajectory)
from ctrnet_ros.sim.render import MujocoRenderer, opengl_frustum
from ctrnet_ros.sim.scene import DistractorSpec, SceneAppearance

PANDA_Q = {"panda_joint1": 0.3, "panda_joint2": -0.4, "panda_joint3": 0.1, "panda_joint4": -2.0,
           "panda_joint5": 0.2, "panda_joint6": 1.9, "panda_joint7": 0.7, "panda_finger_joint1": 0.03}


@pytest.fixture(scope="module")
def panda():
    with MujocoRenderer.for_robot("panda", max_width=640, max_height=480) as r:
        yield r


def _front_camera(width=320, height=240, fovy_deg=50.0):
    """Camera 1.6 m in front of and above the Panda, looking at its middle."""
    camera = PinholeCamera.from_fov(width=width, height=height, fovy_deg=fovy_deg)
    T_base_camera = se3.look_at_optical(np.array([1.4, 0.5, 0.8]), np.array([0.1, 0.0, 0.45]))
    return camera, se3.invert_transform(T_base_camera)


GENERAL_K = PinholeCamera(K=np.array([[300.0, 0.0, 171.3], [0.0, 285.0, 112.6], [0.0, 0.0, 1.0]]), D=np.zeros(5),
                          width=320, height=240)


# --------------------------------------------------------------------------------------------
# Geometry: keypoints, projection and the rasteriser agree
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("camera", [PinholeCamera.from_fov(width=320, height=240, fovy_deg=50.0), GENERAL_K],
                         ids=["centred", "fx_ne_fy_offcentre"])
def test_keypoints_match_rasterised_markers(panda, camera):
    _, T_camera_base = _front_camera()
    frame = panda.render(PANDA_Q, T_camera_base, camera)

    # Ground truth is self-consistent: FK -> camera frame -> PinholeCamera.project.
    kp_base = panda.robot.keypoints_base(panda.spec, PANDA_Q)
    np.testing.assert_allclose(frame.keypoints_base, kp_base, atol=1e-12)
    np.testing.assert_allclose(frame.keypoints_camera, se3.transform_points(T_camera_base, kp_base), atol=1e-12)
    np.testing.assert_allclose(frame.keypoints_uv, camera.project(frame.keypoints_camera), atol=1e-9)
    assert frame.in_image.all()

    # Independent check through MuJoCo's rasteriser: spheres drawn at the keypoints land on the
    # projected keypoints (centroid of their segmentation pixels).
    centroids = panda.render_keypoint_markers(PANDA_Q, T_camera_base, camera, radius=0.02)
    err = np.linalg.norm(centroids - frame.keypoints_uv, axis=1)
    assert np.all(err < 0.5), f"rasterised marker vs projected keypoint (px): {err.round(3)}"


def test_opengl_frustum_maps_image_edges():
    near = 0.01
    center, half_width, bottom, top = opengl_frustum(GENERAL_K, near)
    K = GENERAL_K.K
    # The left edge of the image (u = -0.5) is at x = near * (-0.5 - cx) / fx.
    assert center - half_width == pytest.approx(near * (-0.5 - K[0, 2]) / K[0, 0])
    assert center + half_width == pytest.approx(near * (GENERAL_K.width - 0.5 - K[0, 2]) / K[0, 0])
    assert top == pytest.approx(near * (K[1, 2] + 0.5) / K[1, 1])
    assert bottom == pytest.approx(-near * (GENERAL_K.height - 0.5 - K[1, 2]) / K[1, 1])


def test_frame_outputs_are_consistent(panda):
    camera, T_camera_base = _front_camera(160, 120)
    frame = panda.render(PANDA_Q, T_camera_base, camera)
    assert frame.rgb.shape == (120, 160, 3) and frame.rgb.dtype == np.uint8
    assert frame.link_labels.dtype == np.int16
    np.testing.assert_array_equal(frame.mask, frame.link_labels >= 0)
    assert frame.link_labels.max() < len(frame.link_names)
    assert 0.02 < frame.mask.mean() < 0.6
    assert "panda_link0" in frame.link_names and "panda_hand" in frame.link_names


def test_distorted_camera_is_rejected(panda):
    _, T_camera_base = _front_camera()
    cam = PinholeCamera(K=GENERAL_K.K, D=np.array([0.1, 0.0, 0.0, 0.0, 0.0]), width=320, height=240)
    with pytest.raises(CameraModelError, match="pinhole"):
        panda.render(PANDA_Q, T_camera_base, cam)


# --------------------------------------------------------------------------------------------
# Visibility
# --------------------------------------------------------------------------------------------
def test_visibility_behind_outside_and_occluded(panda):
    camera = PinholeCamera.from_fov(width=160, height=120, fovy_deg=50.0)
    panda.set_appearance(SceneAppearance.neutral())
    try:
        # Behind the camera: camera at x = 1.5 looking further away along +x.
        T_bc = se3.look_at_optical(np.array([1.5, 0.0, 0.5]), np.array([3.0, 0.0, 0.5]))
        f = panda.render(PANDA_Q, se3.invert_transform(T_bc), camera)
        assert np.all(f.keypoints_camera[:, 2] < 0)
        assert not f.in_image.any() and not f.visible.any()
        assert np.all(np.isnan(f.keypoints_uv))

        # In front but outside the image: look 90 degrees away from the robot.
        T_bc = se3.look_at_optical(np.array([1.5, 0.0, 0.5]), np.array([1.5, 2.0, 0.5]))
        f = panda.render(PANDA_Q, se3.invert_transform(T_bc), camera)
        assert not f.in_image.any() and not f.visible.any()

        # Unoccluded hand, then a ball on the line of sight in front of it.
        camera, T_camera_base = _front_camera(160, 120)
        hand = panda.spec.names.index("panda_hand")
        f = panda.render(PANDA_Q, T_camera_base, camera)
        assert f.in_image[hand] and f.visible[hand]
        eye = se3.invert_transform(T_camera_base)[:3, 3]
        ball = DistractorSpec(shape="sphere", size=np.full(3, 0.06), pos=eye + 0.5 * (f.keypoints_base[hand] - eye),
                              quat_xyzw=np.array([0.0, 0.0, 0.0, 1.0]), rgba=np.array([1.0, 0.0, 0.0, 1.0]))
        neutral = SceneAppearance.neutral()
        panda.set_appearance(SceneAppearance(lights=neutral.lights, ambient=neutral.ambient, floor=neutral.floor,
                                             walls=neutral.walls, distractors=(ball,)))
        g = panda.render(PANDA_Q, T_camera_base, camera)
        assert g.in_image[hand] and not g.visible[hand]
        u, v = np.rint(g.keypoints_uv[hand]).astype(int)
        assert not g.mask[v, u]  # the ball, not the robot, is drawn there
    finally:
        panda.set_appearance(SceneAppearance.neutral())


# --------------------------------------------------------------------------------------------
# Determinism, datasets
# --------------------------------------------------------------------------------------------
def _frame_arrays(frame):
    return [frame.rgb, frame.link_labels, frame.keypoints_uv, frame.keypoints_camera, frame.in_image,
            frame.visible, frame.T_camera_base, frame.camera.K]


@pytest.mark.parametrize("domain", ["train", "shifted"])
def test_same_seed_gives_identical_frames(panda, domain):
    cfg = load_domain(domain)
    a, _ = generate_frame(panda, cfg, seed=7, index=3, width=160, height=120)
    other, _ = generate_frame(panda, cfg, seed=7, index=4, width=160, height=120)  # scene state in between
    b, _ = generate_frame(panda, cfg, seed=7, index=3, width=160, height=120)
    for x, y in zip(_frame_arrays(a), _frame_arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.rgb, other.rgb)


def test_dataset_is_deterministic_resumable_and_readable(panda, tmp_path):
    kwargs = dict(num_frames=3, seed=11, domain="train", robot="panda", width=160, height=120, shard_size=2,
                  renderer=panda, progress=False)
    d1 = write_dataset(tmp_path / "a", **kwargs)
    d2 = write_dataset(tmp_path / "b", **kwargs)
    shards = sorted(p.name for p in d1.glob("shard_*.npz"))
    assert shards == ["shard_00000.npz", "shard_00001.npz"]
    for name in shards:
        assert (d1 / name).read_bytes() == (d2 / name).read_bytes()

    # Resume: a lost shard is re-rendered identically; finished shards are left alone.
    before = (d1 / "shard_00000.npz").stat().st_mtime_ns
    lost = (d1 / "shard_00001.npz").read_bytes()
    (d1 / "shard_00001.npz").unlink()
    write_dataset(d1, **kwargs)
    assert (d1 / "shard_00001.npz").read_bytes() == lost
    assert (d1 / "shard_00000.npz").stat().st_mtime_ns == before
    assert json.loads((d1 / "index.json").read_text())["complete"]

    ds = SimDataset(d1)
    assert len(ds) == 3 and ds.keypoint_names == panda.spec.names
    item = ds[2]
    ref, _ = generate_frame(panda, load_domain("train"), seed=11, index=2, width=160, height=120)
    np.testing.assert_array_equal(item["rgb"], ref.rgb)
    np.testing.assert_array_equal(item["link_labels"], ref.link_labels)
    np.testing.assert_array_equal(item["mask"], ref.mask)
    np.testing.assert_array_equal(item["keypoints_uv"], ref.keypoints_uv)
    np.testing.assert_array_equal(item["visible"], ref.visible)
    np.testing.assert_array_equal(item["joint_positions"], [ref.joint_positions[n] for n in ds.joint_names])

    # Different parameters into the same directory are refused.
    with pytest.raises(Exception, match="different parameters"):
        write_dataset(d1, **{**kwargs, "seed": 12})


# --------------------------------------------------------------------------------------------
# Another robot, mesh cache, randomisation pieces, CLI
# --------------------------------------------------------------------------------------------
def test_ur5_renders():
    with MujocoRenderer.for_robot("ur5", max_width=160, max_height=120) as r:
        frame, _ = generate_frame(r, load_domain("train"), seed=0, index=0, width=160, height=120)
        assert frame.mask.any()
        assert frame.in_image.any()
        assert len(frame.keypoints_uv) == len(r.spec)
        assert set(np.unique(frame.link_labels[frame.mask])) <= set(range(len(r.link_names)))


def test_mesh_conversion_is_cached(tmp_path, monkeypatch):
    spec_path = RobotModel.from_spec(KeypointSpec.builtin("ur5")).visual_meshes()[-1].path
    parts = scene_mod.load_mesh_parts(spec_path, cache_dir=tmp_path)
    assert len(list((tmp_path / "meshes").glob("*.npz"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("converted again despite a cache entry")

    monkeypatch.setattr(scene_mod, "_convert_mesh_file", boom)
    again = scene_mod.load_mesh_parts(spec_path, cache_dir=tmp_path)
    assert len(again) == len(parts)
    for p, q in zip(parts, again):
        np.testing.assert_array_equal(p.vertices, q.vertices)
        np.testing.assert_array_equal(p.faces, q.faces)
        np.testing.assert_array_equal(p.rgba, q.rgba)


def test_smooth_trajectory_within_limits_and_speed(panda):
    robot = panda.robot
    traj = smooth_joint_trajectory(robot, np.random.default_rng(3), duration_s=20.0, max_speed=0.5)
    t = np.linspace(0.0, 20.0, 2001)
    q = np.array([traj.positions(x) for x in t])
    lim = robot.joint_limits(traj.joint_names)
    assert np.all(q >= lim[:, 0]) and np.all(q <= lim[:, 1])
    speed = np.abs(np.diff(q, axis=0)) / np.diff(t)[:, None]
    assert speed.max() <= 0.5 * 1.01
    assert q.std(axis=0).min() > 0.0  # every joint moves
    start = robot.sample_configuration(np.random.default_rng(4), margin=0.3)
    traj2 = smooth_joint_trajectory(robot, np.random.default_rng(5), duration_s=10.0, start=start)
    np.testing.assert_allclose([traj2(0.0)[n] for n in traj2.joint_names], [start[n] for n in traj2.joint_names],
                               atol=1e-9)
    again = smooth_joint_trajectory(robot, np.random.default_rng(3), duration_s=20.0, max_speed=0.5)
    assert again(7.5) == traj(7.5)


def test_domain_presets_and_effects():
    train, shifted = load_domain("train"), load_domain("shifted")
    assert train.name == "train" and shifted.name == "shifted"
    assert train.light_temperature_k[0] > shifted.light_temperature_k[1]  # shifted is tungsten-warm
    assert shifted.vignetting[0] > 0 and train.vignetting == (0.0, 0.0)
    with pytest.raises(ValueError, match="unknown"):
        DomainConfig.from_dict({"no_such_field": 1})
    with pytest.raises(ValueError):
        DomainConfig(distance_m=(2.0, 1.0))
    rgb = np.random.default_rng(0).integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    fx = sample_image_effects(shifted, np.random.default_rng(1))
    out1, out2 = apply_image_effects(rgb, fx), apply_image_effects(rgb, fx)
    assert out1.shape == rgb.shape and out1.dtype == np.uint8
    np.testing.assert_array_equal(out1, out2)


def test_cli_contact_sheet(tmp_path):
    from ctrnet_ros.sim.cli import main

    out = tmp_path / "sheet.png"
    assert main(["contact-sheet", "--domain", "train", "--out", str(out), "--num", "2", "--seed", "0",
                 "--width", "160", "--height", "120", "--columns", "2"]) == 0
    import cv2

    img = cv2.imread(str(out))
    assert img.shape == (120, 2 * 160 + 2, 3)
