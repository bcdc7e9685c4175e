import numpy as np
import pytest

from ctrnet_ros.core import pnp, se3
from ctrnet_ros.core.camera import PinholeCamera
from ctrnet_ros.core.fusion import FusionConfig, MovingCameraFilter, StaticCameraFusion
from ctrnet_ros.sim.viewpoints import ShellConfig, sample_camera_on_shell

def position_error(T_camera_base_a, T_camera_base_b):
    """Distance between the two camera positions in the base frame, metres."""
    return se3.translation_error(se3.invert_transform(T_camera_base_a), se3.invert_transform(T_camera_base_b))


CAM = PinholeCamera.from_fov(width=640, height=480, fovy_deg=45.0)


def camera_pose(rng):
    return se3.invert_transform(sample_camera_on_shell(rng, [0.0, 0.0, 0.4], ShellConfig(distance_m=(1.4, 1.8),
                                                                                          lookat_jitter_m=0.0)))


def frame(rng, panda, spec, T, sigma=1.0):
    while True:
        q = panda.sample_configuration(rng, names=[f"panda_joint{i}" for i in range(1, 8)])
        kp = panda.keypoints_base(spec, q)
        uv = CAM.project_from(T, kp)
        if CAM.in_image(uv, margin=5).all():
            break
    uv = uv + rng.normal(0.0, sigma, uv.shape)
    corr = pnp.FrameCorrespondences(kp, uv)
    single = pnp.solve_pnp(kp, uv, CAM)
    return corr, np.array(list(q.values())), single


def feed_moving_robot(fusion, rng, panda, spec, T, n):
    """``n`` frames of a moving robot seen from ``T``: (index of the last bump or None, last state)."""
    bumped_at = st = None
    for i in range(n):
        corr, q, single = frame(rng, panda, spec, T)
        st = fusion.update(corr, q, single=single)
        if st.bumped:
            bumped_at = i
    return bumped_at, st


def test_fusion_converges_below_2mm(panda, panda_spec, rng):
    T = camera_pose(rng)
    fusion = StaticCameraFusion(CAM)
    states = [fusion.update(*frame(rng, panda, panda_spec, T)[:2]) for _ in range(150)]
    assert states[0].T_camera_base is None  # nothing reported before min_frames
    final = states[-1]
    assert final.converged and not any(s.bumped for s in states)
    assert position_error(final.T_camera_base, T) < 0.002
    assert se3.rotation_error_deg(final.T_camera_base, T) < 0.1
    assert final.trans_std_m < 0.002  # the reported uncertainty says so too


def test_isolated_bad_frames_do_not_reset(panda, panda_spec, rng):
    T = camera_pose(rng)
    fusion = StaticCameraFusion(CAM)
    for i in range(80):
        corr, q, single = frame(rng, panda, panda_spec, T)
        if i > 20 and i % 7 == 0:  # a badly detected frame now and then
            corr = pnp.FrameCorrespondences(corr.points_base, corr.pixels + rng.normal(0, 40, corr.pixels.shape))
        st = fusion.update(corr, q, single=single)
        assert not st.bumped
    assert position_error(st.T_camera_base, T) < 0.003


def test_bump_is_detected_and_reconverges(panda, panda_spec, rng):
    T1 = camera_pose(rng)
    bump = se3.make_transform(se3.rvec_to_matrix(np.radians([0.0, 2.0, 1.0])), [0.03, -0.02, 0.01])
    T2 = bump @ T1
    cfg = FusionConfig(bump_frames=8)
    fusion = StaticCameraFusion(CAM, cfg)
    for _ in range(60):
        fusion.update(*frame(rng, panda, panda_spec, T1)[:2])
    bumped_at, st = feed_moving_robot(fusion, rng, panda, panda_spec, T2, 120)
    assert bumped_at == cfg.bump_frames - 1
    assert st.segment == 1
    assert position_error(st.T_camera_base, T2) < 0.002
    assert se3.rotation_error_deg(st.T_camera_base, T2) < 0.1


def test_a_bump_restarts_from_the_disagreeing_frames(panda, panda_spec, rng):
    T1 = camera_pose(rng)
    T2 = se3.make_transform(se3.rvec_to_matrix(np.radians([0.0, 2.0, 1.0])), [0.03, -0.02, 0.01]) @ T1
    fusion = StaticCameraFusion(CAM)
    for _ in range(60):
        fusion.update(*frame(rng, panda, panda_spec, T1)[:2])
    for _ in range(fusion.config.bump_frames):
        corr, q, single = frame(rng, panda, panda_spec, T2)
        st = fusion.update(corr, q, single=single)
    # The streak that proved the bump is the new window's evidence: a pose at once, near the new camera.
    assert st.bumped and st.num_frames == fusion.config.bump_frames
    assert position_error(st.T_camera_base, T2) < 0.01


def test_a_bump_needs_disagreement_from_distinct_configurations(panda, panda_spec, rng):
    T1 = camera_pose(rng)
    T2 = se3.make_transform(se3.rvec_to_matrix(np.radians([0.0, 2.0, 1.0])), [0.03, -0.02, 0.01]) @ T1
    fusion = StaticCameraFusion(CAM)
    for _ in range(60):
        fusion.update(*frame(rng, panda, panda_spec, T1)[:2])
    # The camera moved while the robot stands still: one configuration, disagreeing 3x bump_frames times,
    # is not yet evidence enough to throw the calibration away (it could as well be a biased detection).
    corr, q, single = frame(rng, panda, panda_spec, T2)
    for i in range(3 * fusion.config.bump_frames):
        st = fusion.update(corr, q, single=single)
        assert not st.bumped and not st.agreed
        # ...but from bump_frames on, the old pose is disputed: the newest evidence contradicts it.
        assert st.disputed == (i + 1 if i + 1 >= fusion.config.bump_frames else 0)
    assert st.disputed_configurations == 1
    assert position_error(st.T_camera_base, T1) < 0.002
    assert len(fusion._pending) == fusion.config.bump_frames  # the standing streak is counted, not stored
    # Once it moves, the streak spans distinct configurations and the bump is taken.
    bumped_at, st = feed_moving_robot(fusion, rng, panda, panda_spec, T2, 60)
    assert bumped_at == fusion.config.min_frames - 2  # the standing frames count as one configuration
    assert position_error(st.T_camera_base, T2) < 0.002


def test_a_dispute_ends_when_frames_agree_again(panda, panda_spec, rng):
    T = camera_pose(rng)
    fusion = StaticCameraFusion(CAM)
    for _ in range(60):
        fusion.update(*frame(rng, panda, panda_spec, T)[:2])
    # A standing robot whose keypoints fit well but consistently elsewhere (e.g. a detection biased by
    # an occluder) disputes the pose; a good frame afterwards ends the dispute, and nothing was reset.
    corr, q, _ = frame(rng, panda, panda_spec, T)
    shifted = pnp.FrameCorrespondences(corr.points_base, corr.pixels + np.array([25.0, 0.0]))
    single = pnp.solve_pnp(shifted.points_base, shifted.pixels, CAM)
    for _ in range(fusion.config.bump_frames):
        st = fusion.update(shifted, q, single=single)
    assert st.disputed == fusion.config.bump_frames
    st = fusion.update(*frame(rng, panda, panda_spec, T)[:2])
    assert st.disputed == 0 and st.agreed and st.segment == 0
    assert position_error(st.T_camera_base, T) < 0.002


def test_a_robot_standing_still_is_not_calibrated_until_it_moves(panda, panda_spec, rng):
    T = camera_pose(rng)
    fusion = StaticCameraFusion(CAM)
    corr, q, _ = frame(rng, panda, panda_spec, T)
    for _ in range(20):
        st = fusion.update(corr, q)
    # One configuration seen 20 times is one piece of evidence: kept once, and no pose reported.
    assert st.num_frames == 1 and st.T_camera_base is None
    for _ in range(fusion.config.min_frames - 1):
        st = fusion.update(*frame(rng, panda, panda_spec, T)[:2])
    assert st.num_frames == fusion.config.min_frames and st.T_camera_base is not None
    assert position_error(st.T_camera_base, T) < 0.01


def test_a_wrong_fit_repeated_by_a_standing_robot_is_never_reported(panda, panda_spec, rng):
    # The robot stands still and its keypoints fit a pose far from the truth (as PnP's mirrored
    # solution does); the frames after it moves are right. Nothing wrong may be published meanwhile.
    T = camera_pose(rng)
    T_wrong = se3.make_transform(se3.rvec_to_matrix(np.radians([0.0, 4.0, 0.0])), [0.0, 0.0, 0.3]) @ T
    corr, q, _ = frame(rng, panda, panda_spec, T_wrong)
    fusion = StaticCameraFusion(CAM)
    states = []
    for _ in range(10):
        states.append(fusion.update(corr, q))
    for _ in range(10):
        states.append(fusion.update(*frame(rng, panda, panda_spec, T)[:2]))
    reported = [s.T_camera_base for s in states if s.T_camera_base is not None]
    assert reported and all(position_error(Tr, T) < 0.01 for Tr in reported)


def test_camera_change_resets(panda, panda_spec, rng):
    T = camera_pose(rng)
    fusion = StaticCameraFusion(CAM)
    for _ in range(10):
        fusion.update(*frame(rng, panda, panda_spec, T)[:2])
    assert not fusion.set_camera(CAM)
    assert fusion.set_camera(PinholeCamera.from_fov(width=640, height=480, fovy_deg=50.0))
    assert fusion.num_frames == 0 and fusion.state().T_camera_base is None


def test_moving_filter_gates_outliers_and_follows_confirmed_motion(panda, panda_spec, rng):
    f = MovingCameraFilter()
    T = camera_pose(rng)

    def est(Tc, rmse=0.5):
        return pnp.PnPResult(T_camera_base=Tc, rmse_px=rmse, inliers=np.ones(7, bool), covariance=np.eye(6),
                             num_points=7)

    assert np.allclose(f.update(est(T)), T)
    far = se3.make_transform(np.eye(3), [0.5, 0.0, 0.0]) @ T
    assert np.allclose(f.update(est(far)), T)  # one wild estimate is ignored
    assert np.allclose(f.update(est(T, rmse=50.0)), T)  # a bad fit is ignored
    for _ in range(3):
        out = f.update(est(far))
    assert np.allclose(out, far)  # a confirmed move is followed
