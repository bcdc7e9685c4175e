"""Rigid-transform and rotation conventions, in one place.

Conventions used everywhere in ctrnet_ros:

* A transform is a 4x4 homogeneous matrix named ``T_parent_child``. It maps points in
  *child* coordinates to *parent* coordinates: ``p_parent = T_parent_child @ p_child``.
* Quaternions are in ROS order ``(x, y, z, w)``, unit norm. We return them with ``w >= 0``.
* Rotation vectors (``rvec``) are axis * angle in radians, as OpenCV uses them.
* Camera frames are *optical* frames (REP 103 ``*_optical_frame``): x right, y down, z forward.
* Units are metres and radians unless a name says otherwise (``..._deg``, ``..._mm``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "make_transform",
    "invert_transform",
    "transform_points",
    "quat_xyzw_to_matrix",
    "matrix_to_quat_xyzw",
    "transform_from_translation_quat",
    "transform_to_translation_quat",
    "rvec_to_matrix",
    "matrix_to_rvec",
    "transform_from_rvec_tvec",
    "transform_to_rvec_tvec",
    "rotation_angle",
    "rotation_error_deg",
    "translation_error",
    "look_at_optical",
    "project_to_so3",
    "average_rotations",
]


def _as_f64(a, shape=None, name="array") -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return arr


def make_transform(R, t) -> np.ndarray:
    """Build a 4x4 transform from a (3, 3) rotation and a (3,) translation in metres."""
    T = np.eye(4)
    T[:3, :3] = _as_f64(R, (3, 3), "R")
    T[:3, 3] = _as_f64(t, (3,), "t")
    return T


def invert_transform(T) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform: ``T_a_b -> T_b_a``, without a general matrix inverse."""
    T = _as_f64(T, (4, 4), "T")
    R, t = T[:3, :3], T[:3, 3]
    return make_transform(R.T, -R.T @ t)


def transform_points(T, points) -> np.ndarray:
    """Apply ``T_parent_child`` (4, 4) to points (N, 3) in child coordinates; returns (N, 3) in parent."""
    T = _as_f64(T, (4, 4), "T")
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    return p @ T[:3, :3].T + T[:3, 3]


def quat_xyzw_to_matrix(q) -> np.ndarray:
    """(4,) quaternion in ROS order (x, y, z, w) -> (3, 3) rotation matrix. Normalises the input."""
    q = _as_f64(q, (4,), "quaternion")
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion must be finite and non-zero, got {q}")
    x, y, z, w = q / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat_xyzw(R) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) unit quaternion (x, y, z, w) with w >= 0.

    Uses Shepperd's method (largest diagonal pivot) for numerical stability near 180 degrees.
    """
    R = _as_f64(R, (3, 3), "R")
    tr = np.trace(R)
    diag = np.diag(R)
    k = int(np.argmax(np.append(diag, tr)))
    if k == 3:
        s = 2.0 * np.sqrt(max(1.0 + tr, 0.0))
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    else:
        i, j, l = k, (k + 1) % 3, (k + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + R[i, i] - R[j, j] - R[l, l], 0.0))
        q = np.empty(4)
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[l] = (R[l, i] + R[i, l]) / s
        q[3] = (R[l, j] - R[j, l]) / s
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def transform_from_translation_quat(translation, quat_xyzw) -> np.ndarray:
    """(3,) translation in metres and (4,) quaternion (x, y, z, w) -> (4, 4) transform."""
    return make_transform(quat_xyzw_to_matrix(quat_xyzw), translation)


def transform_to_translation_quat(T) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) transform -> ((3,) translation in metres, (4,) quaternion x, y, z, w)."""
    T = _as_f64(T, (4, 4), "T")
    return T[:3, 3].copy(), matrix_to_quat_xyzw(T[:3, :3])


def rvec_to_matrix(rvec) -> np.ndarray:
    """(3,) rotation vector (axis * angle, radians) -> (3, 3) rotation matrix (Rodrigues)."""
    r = _as_f64(rvec, None).reshape(3)
    theta = np.linalg.norm(r)
    if theta < 1e-12:
        K = np.array([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]])
        return np.eye(3) + K
    k = r / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)


def matrix_to_rvec(R) -> np.ndarray:
    """(3, 3) rotation matrix -> (3,) rotation vector, angle in [0, pi]."""
    q = matrix_to_quat_xyzw(R)
    v, w = q[:3], q[3]
    s = np.linalg.norm(v)
    if s < 1e-12:
        return 2.0 * v  # small-angle limit
    angle = 2.0 * np.arctan2(s, w)
    return v / s * angle


def transform_from_rvec_tvec(rvec, tvec) -> np.ndarray:
    """OpenCV (rvec, tvec) -> ``T_camera_object`` (4, 4)."""
    return make_transform(rvec_to_matrix(rvec), np.asarray(tvec, dtype=np.float64).reshape(3))


def transform_to_rvec_tvec(T) -> tuple[np.ndarray, np.ndarray]:
    """``T_camera_object`` (4, 4) -> OpenCV ((3,) rvec, (3,) tvec)."""
    T = _as_f64(T, (4, 4), "T")
    return matrix_to_rvec(T[:3, :3]), T[:3, 3].copy()


def rotation_angle(R) -> float:
    """Angle in radians of a (3, 3) rotation, in [0, pi]."""
    R = _as_f64(R, (3, 3), "R")
    c = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    # arccos is ill-conditioned near 0; use the skew part for small angles.
    s = np.linalg.norm([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2.0
    return float(np.arctan2(s, c))


def rotation_error_deg(T_a, T_b) -> float:
    """Geodesic angle in degrees between the rotations of two (4, 4) transforms (or (3, 3) rotations)."""
    A, B = np.asarray(T_a, dtype=np.float64), np.asarray(T_b, dtype=np.float64)
    return float(np.degrees(rotation_angle(A[:3, :3].T @ B[:3, :3])))


def translation_error(T_a, T_b) -> float:
    """Euclidean distance in metres between the translations of two (4, 4) transforms."""
    return float(np.linalg.norm(np.asarray(T_a)[:3, 3] - np.asarray(T_b)[:3, 3]))


def look_at_optical(eye, target, up=(0.0, 0.0, 1.0), roll: float = 0.0) -> np.ndarray:
    """``T_world_camera`` for an optical-frame camera at ``eye`` looking at ``target``.

    Args:
        eye: (3,) camera position in world coordinates, metres.
        target: (3,) point the optical axis (+z) passes through.
        up: (3,) world direction that appears "up" (image -y) before roll.
        roll: rotation about the optical axis in radians (positive turns the image clockwise).
    """
    eye = _as_f64(eye, (3,), "eye")
    z = _as_f64(target, (3,), "target") - eye
    if np.linalg.norm(z) < 1e-9:
        raise ValueError("eye and target coincide")
    z /= np.linalg.norm(z)
    up = _as_f64(up, (3,), "up")
    x = np.cross(z, up)  # image right = forward x up
    if np.linalg.norm(x) < 1e-9:  # looking straight along up: pick any perpendicular
        x = np.cross(z, np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=1)
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return make_transform(R, eye)


def project_to_so3(M) -> np.ndarray:
    """Nearest rotation (Frobenius norm) to a (3, 3) matrix, via SVD."""
    U, _, Vt = np.linalg.svd(_as_f64(M, (3, 3), "M"))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def average_rotations(Rs, weights=None) -> np.ndarray:
    """Chordal L2 mean of rotations (N, 3, 3) with optional (N,) non-negative weights."""
    Rs = np.asarray(Rs, dtype=np.float64)
    if Rs.ndim != 3 or Rs.shape[1:] != (3, 3) or len(Rs) == 0:
        raise ValueError(f"Rs must have shape (N, 3, 3) with N >= 1, got {Rs.shape}")
    w = np.ones(len(Rs)) if weights is None else np.asarray(weights, dtype=np.float64)
    return project_to_so3(np.einsum("n,nij->ij", w, Rs))
