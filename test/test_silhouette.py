"""Differentiable soft silhouette: agreement with MuJoCo's exact mask, gradients, pose fitting, edge cases.

Small images (up to 320x240) and a ~5k-face Panda keep this file at some seconds on 2 CPU cores;
the decimated meshes go to the shared mesh cache (build/sim_cache) on the first run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctrnet_ros.core import se3
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.sim.render import MujocoRenderer
from ctrnet_ros.train.metrics import mask_iou
from ctrnet_ros.train.silhouette import RobotMeshSet, SilhouetteRenderer, link_pose_tensor, soft_silhouette

PANDA_Q = {"panda_joint1": 0.3, "panda_joint2": -0.4, "panda_joint3": 0.1, "panda_joint4": -2.0,
           "panda_joint5": 0.2, "panda_joint6": 1.9, "panda_joint7": 0.7, "panda_finger_joint1": 0.03}
PANDA_Q2 = {"panda_joint1": -0.8, "panda_joint2": 0.5, "panda_joint3": -0.3, "panda_joint4": -1.2,
            "panda_joint5": -0.6, "panda_joint6": 1.2, "panda_joint7": -0.4, "panda_finger_joint1": 0.01}
# (eye, target) in the base frame, metres
FRONT_VIEW = (np.array([1.4, 0.5, 0.8]), np.array([0.1, 0.0, 0.45]))
SIDE_VIEW = (np.array([-0.5, -1.3, 1.1]), np.array([0.2, 0.0, 0.4]))


def _T_camera_base(view) -> np.ndarray:
    return se3.invert_transform(se3.look_at_optical(*view))


def _hat(xi: torch.Tensor) -> torch.Tensor:
    """(6,) twist (rotation vector [rad], translation [m]) -> (4, 4) se(3) matrix."""
    w, v = xi[:3], xi[3:]
    zero = torch.zeros((), dtype=xi.dtype)
    return torch.stack([torch.stack([zero, -w[2], w[1], v[0]]), torch.stack([w[2], zero, -w[0], v[1]]),
                        torch.stack([-w[1], w[0], zero, v[2]]), torch.stack([zero, zero, zero, zero])])


def _perturbed(xi: torch.Tensor, T_camera_base0: torch.Tensor) -> torch.Tensor:
    """(1, 4, 4) ``exp(xi) @ T_camera_base0``: a perturbation in the camera frame."""
    return (torch.linalg.matrix_exp(_hat(xi)) @ T_camera_base0)[None]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mujoco_panda():
    with MujocoRenderer.for_robot("panda", max_width=320, max_height=240) as r:
        yield r


@pytest.fixture(scope="module")
def meshset(mujoco_panda):
    return RobotMeshSet.from_robot(mujoco_panda.robot, max_faces=5000)


@pytest.fixture(scope="module")
def tetrahedron():
    """A 10 cm tetrahedron on a single link ``"tip"``."""
    v = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]])
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return RobotMeshSet.from_link_meshes({"tip": [(v, f)]})


# --------------------------------------------------------------------------------------------
# Meshes
# --------------------------------------------------------------------------------------------
def test_meshset_is_decimated_to_budget(meshset, mujoco_panda):
    assert 4000 <= meshset.num_faces <= 5500
    assert meshset.links[0] == "panda_link0" and "panda_hand" in meshset.links
    assert set(meshset.face_link.tolist()) == set(range(len(meshset.links)))  # every link keeps faces
    poses = link_pose_tensor(mujoco_panda.robot, [PANDA_Q, PANDA_Q2], meshset.links, dtype=torch.float64)
    assert poses.shape == (2, len(meshset.links), 4, 4)
    ref = mujoco_panda.robot.link_poses(PANDA_Q2, links=["panda_hand"])["panda_hand"]
    np.testing.assert_allclose(poses[1, meshset.links.index("panda_hand")].numpy(), ref, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Agreement with MuJoCo's exact mask
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q,view,fovy_deg", [(PANDA_Q, FRONT_VIEW, 50.0), (PANDA_Q2, SIDE_VIEW, 50.0),
                                             (PANDA_Q, SIDE_VIEW, 40.0)], ids=["front", "side", "side_narrow"])
def test_silhouette_matches_mujoco_mask(mujoco_panda, meshset, q, view, fovy_deg):
    camera = PinholeCamera.from_fov(width=320, height=240, fovy_deg=fovy_deg)
    T_camera_base = _T_camera_base(view)
    gt = mujoco_panda.render(q, T_camera_base, camera).mask
    renderer = SilhouetteRenderer(meshset)
    sil = renderer(torch.tensor(T_camera_base[None], dtype=torch.float32),
                   link_pose_tensor(mujoco_panda.robot, [q], renderer.links),
                   torch.tensor(camera.K, dtype=torch.float32), (camera.width, camera.height))
    assert sil.shape == (1, 240, 320) and sil.dtype == torch.float32
    assert float(sil.min()) >= 0.0 and float(sil.max()) <= 1.0
    assert 0.02 < gt.mean() < 0.5
    iou = mask_iou(sil[0].numpy(), gt)
    assert iou >= 0.88, f"IoU with MuJoCo's mask {iou:.3f}"


def test_batch_dtype_and_chunking_agree(mujoco_panda, meshset):
    camera = PinholeCamera.from_fov(width=96, height=72, fovy_deg=50.0)
    T = torch.tensor(np.stack([_T_camera_base(FRONT_VIEW), _T_camera_base(SIDE_VIEW)]))
    poses = link_pose_tensor(mujoco_panda.robot, [PANDA_Q, PANDA_Q2], meshset.links, dtype=torch.float64)
    K = torch.tensor(camera.K)
    size = (camera.width, camera.height)
    both = SilhouetteRenderer(meshset)(T, poses, K, size)
    assert both.dtype == torch.float64
    one = SilhouetteRenderer(meshset, tile_size=3, chunk_pixels=500)(T[1:], poses[1:], K[None], size)
    torch.testing.assert_close(one[0], both[1], rtol=0, atol=1e-12)
    f32 = SilhouetteRenderer(meshset)(T.float(), poses.float(), K.float(), size)
    assert float((f32.double() - both).abs().max()) < 1e-3


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------
def test_gradcheck_pose_of_tetrahedron(tetrahedron):
    renderer = SilhouetteRenderer(tetrahedron, sigma=1.0, tile_size=4)
    K = torch.tensor([[40.0, 0.0, 11.5], [0.0, 40.0, 8.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    T0 = torch.tensor(se3.make_transform(se3.rvec_to_matrix([0.3, -0.2, 0.1]), [-0.03, -0.02, 0.45]))
    T_base_link = torch.eye(4, dtype=torch.float64)[None, None]
    xi = torch.tensor([0.02, -0.01, 0.03, 0.004, -0.002, 0.01], dtype=torch.float64, requires_grad=True)

    def render(xi):
        return renderer(_perturbed(xi, T0), T_base_link, K, (24, 18))

    sil = render(xi)
    assert 0.05 < float(sil.detach().mean()) < 0.5  # the tetrahedron is in view, with background around it
    assert torch.autograd.gradcheck(render, (xi,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_triangles_across_tiles_and_chunks():
    # Two overlapping triangles, one thin; each spans several 3x3 tiles and the chunks are tiny.
    tri = torch.tensor([[[[2.3, 1.7], [13.6, 4.2], [5.1, 11.4]], [[1.2, 9.8], [14.7, 10.6], [1.9, 11.3]]]],
                       dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: soft_silhouette(t, None, (16, 14), sigma=0.8, tile_size=3, chunk_pixels=100), (tri,),
        eps=1e-6, atol=1e-6, rtol=1e-4)


def test_camera_pose_fit_from_silhouette(mujoco_panda, meshset):
    """From 5 cm and 3 degrees off, LBFGS on the silhouette MSE recovers the camera pose."""
    camera = PinholeCamera.from_fov(width=160, height=120, fovy_deg=50.0)
    size = (camera.width, camera.height)
    renderer = SilhouetteRenderer(meshset)
    K = torch.tensor(camera.K)
    poses = link_pose_tensor(mujoco_panda.robot, [PANDA_Q], renderer.links, dtype=torch.float64)
    T_base_camera = se3.look_at_optical(*FRONT_VIEW)
    with torch.no_grad():
        target = renderer(torch.tensor(se3.invert_transform(T_base_camera))[None], poses, K, size)

    rng = np.random.default_rng(0)
    axis, direction = (u / np.linalg.norm(u) for u in rng.normal(size=(2, 3)))
    offset = se3.make_transform(se3.rvec_to_matrix(axis * math.radians(3.0)), 0.05 * direction)
    T_base_camera0 = T_base_camera @ offset  # camera 5 cm and 3 degrees off
    T_camera_base0 = torch.tensor(se3.invert_transform(T_base_camera0))
    xi = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([xi], lr=1.0, max_iter=40, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        loss = ((renderer(_perturbed(xi, T_camera_base0), poses, K, size) - target) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        T_base_camera_fit = se3.invert_transform(_perturbed(xi, T_camera_base0)[0].numpy())
    assert se3.translation_error(T_base_camera0, T_base_camera) == pytest.approx(0.05)
    assert se3.translation_error(T_base_camera_fit, T_base_camera) < 0.005
    assert se3.rotation_error_deg(T_base_camera_fit, T_base_camera) < 0.3


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------
def test_robot_behind_camera_gives_empty_silhouette(mujoco_panda, meshset):
    # Camera at x = 1.5 looking further away along +x; then one inside the robot's base, where faces
    # straddle the near plane.
    T = torch.tensor(np.stack([_T_camera_base((np.array([1.5, 0.0, 0.5]), np.array([3.0, 0.0, 0.5]))),
                               _T_camera_base((np.array([0.0, 0.0, 0.3]), np.array([0.0, 0.0, 2.0])))]),
                     requires_grad=True)
    camera = PinholeCamera.from_fov(width=64, height=48, fovy_deg=50.0)
    poses = link_pose_tensor(mujoco_panda.robot, [PANDA_Q] * 2, meshset.links, dtype=torch.float64)
    sil = SilhouetteRenderer(meshset)(T, poses, torch.tensor(camera.K), (64, 48))
    assert torch.isfinite(sil).all()
    assert float(sil.detach()[0].abs().max()) == 0.0
    sil.sum().backward()
    assert torch.isfinite(T.grad).all() and float(T.grad[0].abs().max()) == 0.0


def test_bad_inputs_raise(panda, tetrahedron):
    r = SilhouetteRenderer(tetrahedron)
    T = torch.eye(4)[None]
    L = torch.eye(4)[None, None]
    K = torch.tensor([[40.0, 0.0, 11.5], [0.0, 40.0, 8.5], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match=r"T_camera_base must be \(B, 4, 4\)"):
        r(torch.eye(4), L, K, (24, 18))
    with pytest.raises(ValueError, match=r"T_base_link must be \(B, L, 4, 4\) = \(1, 1, 4, 4\)"):
        r(T, torch.eye(4)[None, None].expand(1, 2, 4, 4), K, (24, 18))
    with pytest.raises(ValueError, match="K must be"):
        r(T, L, K[:2], (24, 18))
    with pytest.raises(ValueError, match="image_size"):
        r(T, L, K, (0, 18))
    with pytest.raises(ValueError, match="image_size"):
        r(T, L, K, 24)
    with pytest.raises(ValueError, match="floating point"):
        r(T.long(), L, K, (24, 18))
    with pytest.raises(ValueError, match="tri_uv must be"):
        soft_silhouette(torch.zeros(1, 2, 3), None, (8, 8))
    with pytest.raises(ValueError, match="sigma"):
        soft_silhouette(torch.zeros(1, 2, 3, 2), None, (8, 8), sigma=0.0)
    with pytest.raises(ValueError, match="without visual meshes: no_such_link"):
        RobotMeshSet.from_robot(panda, links=["panda_link0", "no_such_link"])
    with pytest.raises(ValueError, match="face indices out of range"):
        RobotMeshSet.from_link_meshes({"a": [(np.zeros((3, 3)), np.array([[0, 1, 3]]))]})
