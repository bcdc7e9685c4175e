"""Outline refinement (core.silhouette): rasteriser, distance fields, the fit, the refiner, the pipeline.

The meshes here are boxes fixed to the Panda's links (no mesh files), so the tests run in seconds and
every mask is exact: the fit must then find the true pose from a biased start.
"""

import cv2
import numpy as np
import pytest

from ctrnet_ros.core import se3
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.core.estimator import CameraToRobotEstimator, Detection
from ctrnet_ros.core.pipeline import CalibrationPipeline, PipelineConfig
from ctrnet_ros.core.silhouette import (MaskResampler, SilhouetteFitConfig, SilhouetteMesh, SilhouetteObservation,
                                        SilhouetteRefineConfig, SilhouetteRefiner, _fill, fit_silhouettes,
                                        mask_signed_distance, render_silhouette)
from ctrnet_ros.sim.randomize import smooth_joint_trajectory
from ctrnet_ros.sim.recording import trajectory_bounds
from ctrnet_ros.sim.viewpoints import ShellConfig, sample_camera_on_shell

from oracle import replay_stream

CAM = PinholeCamera.from_fov(width=640, height=480, fovy_deg=50.0)


def box(centre, half, n=6):
    """(vertices, faces) of an axis-aligned box, each side an n x n grid (outline points along the edges)."""
    c, h = np.asarray(centre, float), np.asarray(half, float)
    g = np.linspace(-1.0, 1.0, n + 1)
    verts, faces = [], []
    for axis in range(3):
        for side in (-1.0, 1.0):
            a, b = [k for k in range(3) if k != axis]
            uu, vv = np.meshgrid(g, g, indexing="ij")
            p = np.zeros((n + 1, n + 1, 3))
            p[..., axis], p[..., a], p[..., b] = side, uu, vv
            base = sum(len(v) for v in verts)
            verts.append(p.reshape(-1, 3))
            idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1) + base
            q = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], axis=-1).reshape(-1, 4)
            faces += [q[:, [0, 1, 2]], q[:, [0, 2, 3]]]
    return np.concatenate(verts) * h + c, np.concatenate(faces)


LINK_BOXES = {
    "panda_link0": [box([0, 0, 0.08], [0.09, 0.09, 0.08])],
    "panda_link2": [box([0, -0.15, 0], [0.05, 0.15, 0.05])],
    "panda_link4": [box([-0.04, 0.15, 0], [0.05, 0.15, 0.05])],
    "panda_link6": [box([0.04, 0, 0], [0.05, 0.05, 0.05])],
    "panda_hand": [box([0, 0, 0.05], [0.03, 0.1, 0.03])],
}


@pytest.fixture(scope="module")
def mesh():
    return SilhouetteMesh.from_link_meshes(LINK_BOXES)


def link_poses(robot, mesh, q):
    poses = robot.link_poses(q, links=list(mesh.links))
    return np.stack([poses[l] for l in mesh.links])


@pytest.fixture
def scene(panda):
    rng = np.random.default_rng(5)
    traj = smooth_joint_trajectory(panda, rng, 10.0)
    centre, _ = trajectory_bounds(panda, traj, 10.0)
    T = se3.invert_transform(sample_camera_on_shell(rng, centre, ShellConfig(distance_m=(1.2, 1.4),
                                                                               lookat_jitter_m=0.0)))
    return traj, T


# --- rasteriser and distance fields ------------------------------------------------------------

def test_fill_is_the_union_of_triangles_whatever_their_winding():
    m = SilhouetteMesh.from_link_meshes({"a": [(np.zeros((6, 3)), np.array([[0, 1, 2], [3, 5, 4]]))]})
    uv = np.array([[5, 5], [40, 5], [5, 40], [10, 10], [45, 10], [10, 45]], float)
    img = _fill(m, uv, np.ones(6, bool), (50, 50))
    ref = np.zeros((50, 50), np.uint8)
    for tri in (uv[:3], uv[3:]):
        cv2.fillConvexPoly(ref, tri.astype(np.int32), 1)
    assert img[15, 15] == 1  # the overlap (even-odd filling would leave it empty)
    assert np.abs(img.astype(int) - ref).sum() <= 0.02 * ref.sum()  # edges may differ by a pixel
    # a face with a vertex behind the camera is not drawn
    assert _fill(m, uv, np.array([True, True, False, True, True, True]), (50, 50))[8, 30] == 0


def test_render_silhouette_of_a_box_matches_its_projection(mesh):
    K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
    T = se3.make_transform(np.eye(3), [0, 0, 2.0])
    single = SilhouetteMesh.from_link_meshes({"a": [box([0, 0, 0], [0.2, 0.1, 0.05])]})
    img = render_silhouette(single, T, np.eye(4)[None], K, (320, 240))
    # front face at z = 1.95: half-widths 300 * 0.2 / 1.95 = 30.8 px and 15.4 px
    cols = np.flatnonzero(img[120]); rows = np.flatnonzero(img[:, 160])
    assert abs(cols[0] - (159.5 - 30.77)) <= 1 and abs(cols[-1] - (159.5 + 30.77)) <= 1
    assert abs(rows[0] - (119.5 - 15.38)) <= 1 and abs(rows[-1] - (119.5 + 15.38)) <= 1


def test_signed_distance_is_positive_inside_and_measures_pixels():
    prob = np.zeros((60, 80), np.float32)
    prob[20:40, 30:50] = 1.0
    sdf = mask_signed_distance(prob, (80, 60), smooth_px=0.0)
    assert sdf[30, 40] > 9 and sdf[30, 10] < -19
    assert sdf[30, 30] == pytest.approx(0.5) and sdf[30, 29] == pytest.approx(-0.5)
    assert np.all(mask_signed_distance(np.zeros((6, 8)), (8, 6)) < 0)  # no robot: outside everywhere
    with pytest.raises(ValueError):
        mask_signed_distance(np.zeros((2, 3, 4)), (8, 6))


def test_mask_resampler_maps_cells_to_undistorted_pixels():
    tf = CAM.letterbox_transform(320, 240)
    # without distortion: the fit frame is a plain resize of the camera image
    r = MaskResampler(CAM, tf, (60, 80), fit_width=160)
    prob = np.random.default_rng(0).random((60, 80)).astype(np.float32)
    assert r.size == (160, 120)
    assert np.allclose(r(prob)[1:-1, 1:-1], cv2.resize(prob, (160, 120))[1:-1, 1:-1], atol=1e-5)
    # with distortion: a 3D point's undistorted fit pixel maps to the mask cell of its distorted pixel
    cam = PinholeCamera(K=CAM.K, D=np.array([-0.2, 0.05, 0.001, -0.001, 0.0]), width=640, height=480)
    rd = MaskResampler(cam, cam.letterbox_transform(320, 240), (60, 80), fit_width=160)
    j, i = 100, 30  # a fit-frame pixel (undistorted) -> its ray -> the distorted camera -> the mask cell
    P = (np.linalg.inv(rd.K) @ np.array([j, i, 1.0]) * 1.5)[None]
    cell = (cam.letterbox_transform(320, 240).apply_coords(cam.project(P)) + 0.5) / 4 - 0.5
    assert np.allclose([rd._map_u[i, j], rd._map_v[i, j]], cell[0], atol=0.05)
    assert not np.allclose(cell[0], r._map_u[i, j])  # the distortion does move it


# --- the fit -----------------------------------------------------------------------------------

def exact_observations(panda, mesh, traj, T, times, size=(160, 120)):
    K = CAM.resize_transform(*size).scale_intrinsics(CAM.K)
    out = []
    for t in times:
        Tbl = link_poses(panda, mesh, traj(t))
        img = render_silhouette(mesh, T, Tbl, K, size).astype(np.float32)
        out.append(SilhouetteObservation(T_base_link=Tbl, sdf=mask_signed_distance(img, size), K=K))
    return out


def test_fit_recovers_the_pose_from_exact_outlines(panda, mesh, scene):
    traj, T = scene
    obs = exact_observations(panda, mesh, traj, T, np.linspace(0, 9, 12))
    start = se3.make_transform(se3.rvec_to_matrix([0.01, -0.015, 0.01]), [0.02, -0.015, 0.03]) @ T
    res = fit_silhouettes(start, obs, mesh, SilhouetteFitConfig(iterations=30))
    A, B = se3.invert_transform(res.T_camera_base), se3.invert_transform(T)
    assert res.ok and res.rms_px < res.initial_rms_px
    assert se3.translation_error(A, B) < 1e-3 and se3.rotation_error_deg(A, B) < 0.05
    # at the truth, nothing moves
    same = fit_silhouettes(T, obs, mesh)
    assert same.rms_px < 1e-6 and np.allclose(same.T_camera_base, T)


def test_fit_refuses_when_outlines_meet_no_boundary(panda, mesh, scene):
    traj, T = scene
    obs = exact_observations(panda, mesh, traj, T, [0.0, 1.0])
    far = se3.make_transform(np.eye(3), [0.0, 0.0, -5.0]) @ T  # robot behind the camera
    res = fit_silhouettes(far, obs, mesh)
    assert not res.ok and "outline points" in res.detail and np.allclose(res.T_camera_base, far)


def test_refiner_gates_and_resets(panda, mesh, scene):
    traj, T = scene
    tf = CAM.letterbox_transform(320, 240)
    cfg = SilhouetteRefineConfig(min_frames=3, every_frames=2, max_correction_m=0.01)
    ref = SilhouetteRefiner(mesh, cfg)
    K_in = tf.scale_intrinsics(CAM.K)
    for t in (0.0, 2.0, 4.0):
        Tbl = link_poses(panda, mesh, traj(t))
        mask = cv2.resize(render_silhouette(mesh, T, Tbl, K_in, (320, 240)).astype(np.float32), (80, 60),
                          interpolation=cv2.INTER_AREA)
        assert ref.add(mask, CAM, tf, Tbl, np.array(list(traj(t).values())))
        assert not ref.add(mask, CAM, tf, Tbl, np.array(list(traj(t).values())))  # same joints: not kept
    assert ref.num_frames == 3 and ref.due()
    off = se3.make_transform(np.eye(3), [0.03, 0.0, 0.0]) @ T  # the refinement moves 3 cm: over the limit
    assert ref.refine(off) is None and "moved the camera" in ref.last_detail and ref.pose is None
    assert not ref.due() or ref.refinements == 0
    job = ref.start(T)
    ref.reset()  # a result computed for frames from before a reset is dropped
    assert ref.finish(job, job.run()) is None and ref.num_frames == 0


def test_refiner_schedule_doubles_then_steps(panda, mesh, scene):
    # fits at 4 and 8 kept frames (growth 2), then after every 6 new frames (sooner than 16, the next
    # doubling), also once the 16-frame window is full
    traj, T = scene
    tf = CAM.letterbox_transform(320, 240)
    cfg = SilhouetteRefineConfig(min_frames=4, growth=2.0, every_frames=6, max_frames=16)
    ref = SilhouetteRefiner(mesh, cfg)
    Tbl = link_poses(panda, mesh, traj(0.0))
    mask = cv2.resize(render_silhouette(mesh, T, Tbl, tf.scale_intrinsics(CAM.K), (320, 240)).astype(np.float32),
                      (80, 60), interpolation=cv2.INTER_AREA)
    fitted_at = []
    for i in range(1, 31):
        assert ref.add(mask, CAM, tf, Tbl, np.array([0.1 * i]))
        if ref.due():
            ref.start(T)
            fitted_at.append(i)
    assert fitted_at == [4, 8, 14, 20, 26]
    ref.reset()  # after a reset the schedule starts again
    for i in range(1, 5):
        ref.add(mask, CAM, tf, Tbl, np.array([0.1 * i]))
    assert ref.due()


# --- through the pipeline ----------------------------------------------------------------------

class OutlineOracle:
    """Test double: biased keypoints (spread 3 % wider than the truth: the robot looks nearer) and the
    exact mask."""

    def __init__(self, names, mesh, robot, spread=1.03):
        self.keypoint_names = list(names)
        self.input_size = (320, 240)
        self.has_mask = True
        self.mesh, self.robot, self.spread = mesh, robot, spread
        self.scenes = {}

    def detect(self, image_rgb):
        cam, T, q, kp = self.scenes[int(image_rgb[0, 0, 0]) + 256 * int(image_rgb[0, 0, 1])]
        tf = cam.letterbox_transform(*self.input_size)
        uv = tf.apply_coords(cam.project_from(T, kp))
        uv = uv.mean(axis=0) + self.spread * (uv - uv.mean(axis=0))
        render = render_silhouette(self.mesh, T, link_poses(self.robot, self.mesh, q), tf.scale_intrinsics(cam.K),
                                   self.input_size).astype(np.float32)
        mask = cv2.resize(render, (80, 60), interpolation=cv2.INTER_AREA)  # a stride-4 mask
        return Detection(keypoints_uv=uv, confidence=np.ones(len(kp)), mask=mask)


def replay(pipe, det, panda, spec, traj, T, duration=6.0, t0=0.0):
    return replay_stream(pipe, det, traj, lambda t, q: (CAM, T, q, panda.keypoints_base(spec, q)),
                         duration=duration, t0=t0)


def _error_mm(T_a, T_b):
    return 1e3 * se3.translation_error(se3.invert_transform(T_a), se3.invert_transform(T_b))


def test_pipeline_publishes_the_outline_refined_pose(panda, panda_spec, mesh, scene):
    traj, T = scene
    det = OutlineOracle(panda_spec.names, mesh, panda)
    est = CameraToRobotEstimator(detector=det, robot=panda, spec=panda_spec)
    config = PipelineConfig(silhouette=SilhouetteRefineConfig(fit_width=320))
    pipe = CalibrationPipeline(est, config, silhouette_mesh=mesh)
    plain = CalibrationPipeline(CameraToRobotEstimator(detector=det, robot=panda, spec=panda_spec), config)
    pipe.set_camera(CAM), plain.set_camera(CAM)
    results = replay(pipe, det, panda, panda_spec, traj, T)
    det.scenes.clear()
    baseline = replay(plain, det, panda, panda_spec, traj, T)
    last, base = results[-1], baseline[-1]
    assert not base.fusion.refined and last.fusion.refined and last.source == "fused"
    kp_err, refined_err = _error_mm(base.T_camera_base, T), _error_mm(last.T_camera_base, T)
    # biased keypoints put the camera centimetres too near; exact outlines remove most of that
    assert kp_err > 10 and refined_err < kp_err / 4
    assert np.isfinite(last.fusion.trans_std_m)
    assert "silhouette" in next(r for r in results if r.fusion and r.fusion.refined).estimate.timings_ms
    # a reset forgets the refinement with the frames
    pipe.reset()
    assert pipe.refiner.pose is None and pipe.refiner.num_frames == 0


def test_pipeline_background_refinement_arrives_later(panda, panda_spec, mesh, scene):
    traj, T = scene
    det = OutlineOracle(panda_spec.names, mesh, panda)
    est = CameraToRobotEstimator(detector=det, robot=panda, spec=panda_spec)
    pipe = CalibrationPipeline(est, PipelineConfig(silhouette=SilhouetteRefineConfig(min_frames=5)),
                               silhouette_mesh=mesh, refine_in_background=True)
    pipe.set_camera(CAM)
    try:
        replay(pipe, det, panda, panda_spec, traj, T, duration=2.0)
        assert pipe._job is not None or pipe.refiner.refinements > 0
        if pipe._job is not None:
            n = len(pipe._job[0].observations)
            assert pipe.refine_running in (0, n)  # 0 only if it already finished
            pipe._job[1].result(timeout=60)  # let the running fit finish
            assert pipe.refine_running == 0  # a finished fit waiting for the next frame no longer runs
        results = replay(pipe, det, panda, panda_spec, traj, T, duration=0.2, t0=2.0)  # the next frame takes it
        assert pipe.refiner.refinements >= 1 and results[-1].fusion.refined
    finally:
        pipe.close()
