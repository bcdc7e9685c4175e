import numpy as np
import pytest

from ctrnet_ros.core import se3


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def random_rotation(rng):
    q = rng.normal(size=4)
    return se3.quat_xyzw_to_matrix(q / np.linalg.norm(q))


def test_quaternion_round_trip(rng):
    for _ in range(200):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q2 = se3.matrix_to_quat_xyzw(se3.quat_xyzw_to_matrix(q))
        assert q2[3] >= 0
        np.testing.assert_allclose(q2, q if q[3] >= 0 else -q, atol=1e-12)


def test_quaternion_is_ros_order():
    # 90 degrees about z: (x, y, z, w) = (0, 0, sin 45, cos 45)
    R = se3.quat_xyzw_to_matrix([0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_near_180_degree_rotation_round_trip():
    for axis in np.eye(3):
        R = se3.rvec_to_matrix(axis * (np.pi - 1e-9))
        np.testing.assert_allclose(se3.quat_xyzw_to_matrix(se3.matrix_to_quat_xyzw(R)), R, atol=1e-9)


def test_rvec_round_trip_and_angle(rng):
    for _ in range(100):
        r = rng.normal(size=3)
        r *= rng.uniform(0, np.pi - 1e-3) / np.linalg.norm(r)
        R = se3.rvec_to_matrix(r)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(se3.matrix_to_rvec(R), r, atol=1e-9)
        assert se3.rotation_angle(R) == pytest.approx(np.linalg.norm(r), abs=1e-9)


def test_transform_inverse_and_translation_quat(rng):
    for _ in range(50):
        T = se3.make_transform(random_rotation(rng), rng.normal(size=3))
        np.testing.assert_allclose(se3.invert_transform(T) @ T, np.eye(4), atol=1e-12)
        t, q = se3.transform_to_translation_quat(T)
        np.testing.assert_allclose(se3.transform_from_translation_quat(t, q), T, atol=1e-12)
        rv, tv = se3.transform_to_rvec_tvec(T)
        np.testing.assert_allclose(se3.transform_from_rvec_tvec(rv, tv), T, atol=1e-9)


def test_transform_points_maps_child_to_parent():
    T_parent_child = se3.make_transform(np.eye(3), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(se3.transform_points(T_parent_child, [[0.0, 0.0, 0.0]]), [[1.0, 2.0, 3.0]])


def test_look_at_optical_axes():
    T = se3.look_at_optical([2.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    R = T[:3, :3]
    np.testing.assert_allclose(R[:, 2], [-1.0, 0.0, 0.0], atol=1e-12)  # z forward, towards the target
    np.testing.assert_allclose(R[:, 1], [0.0, 0.0, -1.0], atol=1e-12)  # y down = -world up
    np.testing.assert_allclose(np.linalg.det(R), 1.0)
    np.testing.assert_allclose(T[:3, 3], [2.0, 0.0, 1.0])


def test_errors_and_average(rng):
    R = random_rotation(rng)
    d = se3.rvec_to_matrix([0.0, 0.0, np.radians(3.0)])
    assert se3.rotation_error_deg(R, R @ d) == pytest.approx(3.0, abs=1e-9)
    Rs = [R @ se3.rvec_to_matrix(rng.normal(0, 0.01, 3)) for _ in range(100)]
    assert se3.rotation_error_deg(se3.average_rotations(Rs), R) < 0.2


def test_invalid_inputs():
    with pytest.raises(ValueError):
        se3.quat_xyzw_to_matrix([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        se3.quat_xyzw_to_matrix([np.nan, 0.0, 0.0, 1.0])
    with pytest.raises(ValueError):
        se3.make_transform(np.eye(2), [0, 0, 0])
