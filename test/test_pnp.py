import cv2
import numpy as np
import pytest

from ctrnet_ros.core import pnp, se3
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.sim.viewpoints import ShellConfig, sample_visible_view

CAM = PinholeCamera.from_fov(width=640, height=480, fovy_deg=45.0)
SHELL = ShellConfig(distance_m=(0.8, 2.5))


def views(rng, panda, spec, n, q=None):
    return [sample_visible_view(rng, panda, spec, CAM, SHELL, q=q) for _ in range(n)]


def test_noise_free_recovery_is_exact(panda, panda_spec, rng):
    for q, T, kp, uv in views(rng, panda, panda_spec, 30):
        res = pnp.solve_pnp(kp, uv, CAM)
        assert se3.translation_error(res.T_camera_base, T) < 1e-6
        assert se3.rotation_error_deg(res.T_camera_base, T) < 1e-4
        assert res.inliers.all() and res.rmse_px < 1e-3


def test_noise_and_gross_outlier(panda, panda_spec, rng):
    t_err = []
    for q, T, kp, uv in views(rng, panda, panda_spec, 40):
        noisy = uv + rng.normal(0.0, 1.0, uv.shape)
        bad = rng.integers(len(uv))
        noisy[bad] += rng.choice([-1, 1], 2) * rng.uniform(40, 80, 2)
        res = pnp.solve_pnp(kp, noisy, CAM)
        assert not res.inliers[bad]
        t_err.append(se3.translation_error(res.T_camera_base, T))
    assert np.median(t_err) < 0.05


def test_coplanar_configuration_q3_q5_zero(panda, panda_spec, rng):
    """q3 = q5 = 0 puts the 7 Panda keypoints in one plane: EPnP breaks, SQPnP must be exact."""
    epnp_worst = 0.0
    solved = 0
    while solved < 10:
        q = panda.sample_configuration(rng) | {"panda_joint3": 0.0, "panda_joint5": 0.0}
        _, T, kp, uv = sample_visible_view(rng, panda, panda_spec, CAM, SHELL, q=q)
        centred = kp - kp.mean(axis=0)
        assert np.linalg.svd(centred, compute_uv=False)[2] < 1e-9  # really coplanar
        if np.linalg.svd(uv - uv.mean(axis=0), compute_uv=False)[1] / np.sqrt(7) < 0.5:
            # The camera lies (almost) in the keypoints' plane: the image points are collinear and the
            # pose is unobservable under any noise. Refused with a reason, not solved.
            with pytest.raises(pnp.PnPError, match="collinear"):
                pnp.solve_pnp(kp, uv, CAM)
            continue
        solved += 1
        for method in ("sqpnp", "iterative"):
            res = pnp.solve_pnp(kp, uv, CAM, config=pnp.PnPConfig(method=method))
            assert se3.rotation_error_deg(res.T_camera_base, T) < 1e-4, method
            assert se3.translation_error(res.T_camera_base, T) < 1e-6, method
        ok, rvec, tvec = cv2.solvePnP(kp, uv, CAM.K, None, flags=cv2.SOLVEPNP_EPNP)
        epnp_worst = max(epnp_worst, se3.rotation_error_deg(se3.transform_from_rvec_tvec(rvec.ravel(), tvec.ravel()), T))
    assert epnp_worst > 1.0  # documents why SQPnP is the default


def test_distorted_camera(panda, panda_spec, rng):
    cam = PinholeCamera(K=CAM.K, D=[0.1, -0.2, 0.001, 0.002, 0.05], width=640, height=480)
    q, T, kp, _ = sample_visible_view(rng, panda, panda_spec, CAM, SHELL)
    res = pnp.solve_pnp(kp, cam.project_from(T, kp), cam)
    assert se3.translation_error(res.T_camera_base, T) < 1e-5


def test_weights_and_missing_points(panda, panda_spec, rng):
    q, T, kp, uv = sample_visible_view(rng, panda, panda_spec, CAM, SHELL)
    noisy = uv.copy()
    noisy[2] += [3.0, -3.0]  # a moderate error RANSAC keeps as inlier...
    noisy[5] = np.nan  # ...and an undetected keypoint
    w = np.ones(7)
    w[2] = 1e-3  # ...but with a low confidence weight it barely moves the pose
    unweighted = pnp.solve_pnp(kp, noisy, CAM)
    weighted = pnp.solve_pnp(kp, noisy, CAM, weights=w)
    assert not weighted.inliers[5] and weighted.num_points == 6
    assert se3.translation_error(weighted.T_camera_base, T) < se3.translation_error(unweighted.T_camera_base, T)


def test_refusals_state_a_reason(panda, panda_spec, rng):
    q, T, kp, uv = sample_visible_view(rng, panda, panda_spec, CAM, SHELL)
    few = uv.copy()
    few[:4] = np.nan
    with pytest.raises(pnp.PnPError, match="only 3 usable points") as e:
        pnp.solve_pnp(kp, few, CAM)
    assert e.value.reason == "too_few_points"
    line = np.outer(np.linspace(0, 1, 7), [0.1, 0.2, 0.3])
    with pytest.raises(pnp.PnPError) as e:
        pnp.solve_pnp(line, CAM.project_from(T, line), CAM)
    assert e.value.reason == "degenerate_geometry"
    with pytest.raises(pnp.PnPError) as e:
        pnp.solve_pnp(kp, uv, CAM, weights=np.zeros(7))
    assert e.value.reason == "too_few_points"


def test_covariance_matches_monte_carlo(panda, panda_spec, rng):
    q, T, kp, uv = sample_visible_view(rng, panda, panda_spec, CAM, SHELL)
    deltas, covs = [], []
    for _ in range(300):
        res = pnp.solve_pnp(kp, uv + rng.normal(0, 1.0, uv.shape), CAM, config=pnp.PnPConfig(ransac=False))
        # left perturbation in the camera frame: T_est = Exp(d) T
        D = res.T_camera_base @ se3.invert_transform(T)
        deltas.append(np.concatenate([D[:3, 3], se3.matrix_to_rvec(D[:3, :3])]))
        covs.append(res.covariance)
    emp = np.std(deltas, axis=0)
    pred = np.sqrt(np.diag(np.median(covs, axis=0)))
    assert np.all(pred / emp > 0.5) and np.all(pred / emp < 2.0), (pred, emp)


def test_covariance_of_inverse_against_sampling(rng):
    T = se3.make_transform(se3.rvec_to_matrix([0.3, -0.2, 0.5]), [0.2, 0.1, 1.4])
    cov = np.diag([1e-4, 2e-4, 5e-4, 1e-4, 3e-5, 2e-4])
    Ti = se3.invert_transform(T)
    samples = []
    for _ in range(4000):
        d = rng.multivariate_normal(np.zeros(6), cov)
        D = se3.invert_transform(pnp.se3_exp(d) @ T) @ T  # = Exp(d') with d' the inverse's perturbation
        samples.append(np.concatenate([D[:3, 3], se3.matrix_to_rvec(D[:3, :3])]))
    np.testing.assert_allclose(np.cov(np.array(samples).T), pnp.covariance_of_inverse(T, cov), atol=2e-5)


def test_multiframe_rejects_outlier_frames_and_beats_single_frame(panda, panda_spec, rng):
    _, T, _, _ = sample_visible_view(rng, panda, panda_spec, CAM, SHELL)
    frames, single_err, bad = [], [], set()
    for i in range(50):
        for _ in range(100):
            q = panda.sample_configuration(rng)
            kp = panda.keypoints_base(panda_spec, q)
            uv = CAM.project_from(T, kp)
            if CAM.in_image(uv).all():
                break
        uv = uv + rng.normal(0.0, 1.0, uv.shape)
        if i % 10 == 3:  # a whole frame of swapped detections
            uv = uv[::-1].copy()
            bad.add(i)
        frames.append(pnp.FrameCorrespondences(kp, uv))
        if i not in bad:
            single_err.append(se3.translation_error(pnp.solve_pnp(kp, uv, CAM).T_camera_base, T))
    res = pnp.solve_pnp_multiframe(frames, CAM)
    assert {i for i in range(50) if not res.frame_inliers[i]} >= bad
    assert res.frame_inliers.sum() >= 45 - 2
    err = se3.translation_error(res.pose.T_camera_base, T)
    assert err < 0.004 and err < np.median(single_err) / 3
    assert se3.rotation_error_deg(res.pose.T_camera_base, T) < 0.15


def test_multiframe_needs_frames():
    with pytest.raises(pnp.PnPError):
        pnp.solve_pnp_multiframe([], CAM)


def test_camera_position_covariance_against_sampling(rng):
    T = se3.make_transform(se3.rvec_to_matrix([0.3, -0.2, 0.5]), [0.2, 0.1, 1.8])
    cov = np.diag([1e-6, 2e-6, 5e-6, 1e-6, 3e-7, 2e-6])
    pos = []
    for _ in range(4000):
        d = rng.multivariate_normal(np.zeros(6), cov)
        pos.append(se3.invert_transform(pnp.se3_exp(d) @ T)[:3, 3])
    np.testing.assert_allclose(np.cov(np.array(pos).T), pnp.camera_position_covariance(T, cov), atol=3e-7)


def test_opencv_failures_become_pnp_errors():
    """Keypoints bunched at one spot (a weak detector) made OpenCV assert inside RANSAC; that must be a PnPError."""
    X = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.33], [0.11, -0.03, 0.63], [0.1, -0.11, 0.62], [0.13, -0.44, 0.84],
                  [0.2, -0.48, 0.8], [0.22, -0.4, 0.74]])
    uv = np.array([[305.39, 286.19], [307.35, 236.91], [301.13, 107.42], [299.88, 109.95], [299.99, 109.52],
                   [300.06, 109.24], [299.47, 110.72]])
    cam = PinholeCamera(K=np.array([[451.33, 0.0, 330.68], [0.0, 443.47, 245.01], [0.0, 0.0, 1.0]]), width=640,
                        height=480)
    w = np.array([0.55, 0.47, 0.72, 0.68, 0.68, 0.69, 0.58])
    try:
        res = pnp.solve_pnp(X, uv, cam, weights=w)
    except pnp.PnPError as exc:
        assert exc.reason
    else:  # if a solver copes, the result must at least be a valid pose
        assert np.all(np.isfinite(res.T_camera_base))
    same = np.tile(uv[:1], (7, 1)) + np.random.default_rng(0).normal(0, 0.01, (7, 2))
    with pytest.raises(pnp.PnPError) as e:
        pnp.solve_pnp(X, same, cam)
    assert e.value.reason == "degenerate_geometry"


def test_reprojection_jacobian_matches_finite_differences():
    from ctrnet_ros.core.pnp import _residuals_and_jacobian, se3_exp

    rng = np.random.default_rng(1)
    X = rng.normal(0.0, 0.3, (9, 3))
    T = np.eye(4)
    T[:3, :3] = se3.rvec_to_matrix([0.3, -0.2, 0.1])
    T[:3, 3] = [0.1, -0.2, 2.0]
    K = np.array([[600.0, 0, 320], [0, 610.0, 240], [0, 0, 1]])
    uv, sw = rng.uniform(0, 600, (9, 2)), rng.uniform(0.2, 1.0, 9)
    _, J = _residuals_and_jacobian(T, X, uv, K, sw)
    J_num = np.zeros_like(J)
    for i in range(6):
        d = np.zeros(6)
        d[i] = 1e-6
        J_num[:, i] = (_residuals_and_jacobian(se3_exp(d) @ T, X, uv, K, sw)[0]
                       - _residuals_and_jacobian(se3_exp(-d) @ T, X, uv, K, sw)[0]) / 2e-6
    np.testing.assert_allclose(J, J_num, atol=1e-5 * np.abs(J).max())
