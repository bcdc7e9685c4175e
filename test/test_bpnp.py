"""Differentiable PnP: exact forward pose, implicit-function gradients that match finite differences."""

import numpy as np
import pytest
import torch

from ctrnet_ros.core import se3
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.core.pnp import PnPConfig, refine_pose, se3_exp
from ctrnet_ros.train.bpnp import differentiable_pnp, gauss_newton_step, project_points, se3_exp_torch

CAM = PinholeCamera.from_fov(width=320, height=240, fovy_deg=50.0)


def _scene(seed: int, n: int = 8, noise_px: float = 0.0):
    rng = np.random.default_rng(seed)
    X = rng.uniform([-0.3, -0.3, 0.0], [0.3, 0.3, 0.9], size=(n, 3))
    T = se3.make_transform(se3.rvec_to_matrix(rng.normal(0, 0.3, 3)), np.array([0.05, -0.1, 1.6]))
    uv = CAM.project_from(T, X) + rng.normal(0, noise_px, (n, 2))
    return X, uv, T


def test_se3_exp_matches_core_and_is_smooth_at_zero():
    rng = np.random.default_rng(0)
    xi = np.vstack([rng.normal(0, 0.5, (4, 6)), np.zeros((1, 6)), [[1e-3, 0, 0, 1e-7, 0, 0]]])
    got = se3_exp_torch(torch.from_numpy(xi)).numpy()
    for g, x in zip(got, xi):
        np.testing.assert_allclose(g, se3_exp(x), atol=1e-12)
    z = torch.zeros(1, 6, dtype=torch.float64, requires_grad=True)
    se3_exp_torch(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_forward_is_the_robust_solution_and_gradient_matches_finite_differences():
    X, uv, T_true = _scene(1, noise_px=0.7)
    Xt = torch.from_numpy(X)[None]
    uvt = torch.from_numpy(uv)[None].requires_grad_(True)
    T, res = differentiable_pnp(Xt, uvt, [CAM], config=PnPConfig(ransac=False))
    assert res.ok[0]
    np.testing.assert_allclose(T.detach().numpy()[0], res.T_camera_base[0], atol=1e-9)  # the GN step is ~0
    # d(camera position)/d(pixels) against central differences of the converged LM solution
    g = torch.autograd.grad(T[0, :3, 3].sum(), uvt)[0].numpy()[0]
    fd = np.zeros_like(uv)
    eps = 1e-4
    for i in range(len(uv)):
        for j in range(2):
            out = []
            for s in (1, -1):
                p = uv.copy()
                p[i, j] += s * eps
                Ts, _, _ = refine_pose(res.T_camera_base[0], X, p, CAM.K, iterations=50)
                out.append(Ts[:3, 3].sum())
            fd[i, j] = (out[0] - out[1]) / (2 * eps)
    # Gauss-Newton drops the second-order residual terms: agreement to a few percent with 0.7 px noise
    np.testing.assert_allclose(g, fd, rtol=0.05, atol=2e-5 * np.abs(fd).max())


def test_gauss_newton_step_gradcheck():
    X, uv, T_true = _scene(2)
    Xt = torch.from_numpy(X)[None]
    K = torch.from_numpy(np.array(CAM.K))[None]
    T0 = torch.from_numpy(T_true)[None]
    uvt = torch.from_numpy(uv)[None].requires_grad_(True)
    w = torch.rand(1, len(uv), dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u, ww: gauss_newton_step(T0, Xt, u, K, ww)[:, :3, :], (uvt, w))


def test_moving_keypoints_moves_the_pose_the_right_way():
    """Gradient descent on the pixels towards the true projections recovers the true pose."""
    X, uv, T_true = _scene(3)
    Xt = torch.from_numpy(X)[None]
    rng = np.random.default_rng(3)
    uv_bad = torch.from_numpy(uv + rng.normal(0, 4.0, uv.shape))[None].requires_grad_(True)
    opt = torch.optim.Adam([uv_bad], lr=0.5)
    target = project_points(torch.from_numpy(T_true)[None], Xt, torch.from_numpy(np.array(CAM.K))[None])
    err0 = None
    for _ in range(60):
        T, _ = differentiable_pnp(Xt, uv_bad, [CAM], config=PnPConfig(ransac=False))
        loss = (project_points(T, Xt, torch.from_numpy(np.array(CAM.K))[None]) - target).pow(2).mean()
        err0 = err0 if err0 is not None else se3.translation_error(T.detach().numpy()[0], T_true)
        opt.zero_grad()
        loss.backward()
        opt.step()
    err1 = se3.translation_error(T.detach().numpy()[0], T_true)
    assert err1 < 0.1 * err0, (err0, err1)


def test_failed_solve_is_reported_and_keeps_the_graph_finite():
    X, uv, _ = _scene(4, n=6)
    uv[2:] = np.nan  # only two usable points
    uvt = torch.from_numpy(np.nan_to_num(uv))[None].requires_grad_(True)
    w = torch.from_numpy(np.isfinite(uv[:, 0]).astype(np.float64))[None]
    T, res = differentiable_pnp(torch.from_numpy(X)[None], uvt, [CAM], weights=w)
    assert not res.ok[0] and res.reasons[0]
    assert torch.isfinite(T).all()


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="points_base must have shape"):
        differentiable_pnp(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2), [CAM])
