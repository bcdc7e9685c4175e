"""Transforms and covariances <-> geometry_msgs, and nanoseconds <-> builtin_interfaces/Time.

Conventions (see :mod:`ctrnet_ros.core.se3`): a (4, 4) ``T_parent_child`` maps child coordinates to
parent coordinates; quaternions are (x, y, z, w); metres and radians.

Covariances: the core reports a *left* perturbation ``T = Exp([rho, phi]) @ T_hat`` (twist in the
parent frame, see :mod:`ctrnet_ros.core.pnp`). geometry_msgs/PoseWithCovariance perturbs position and
orientation separately, ``p = p_hat + dp`` and ``R = Exp(dphi) @ R_hat`` with ``dphi`` about the parent's
fixed axes, ordered (x, y, z, rotX, rotY, rotZ). To first order ``dp = rho + phi x p = rho - [p]x phi`` and
``dphi = phi``, so :func:`left_covariance_to_ros` applies that Jacobian.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseWithCovarianceStamped, Transform, TransformStamped

from ..core import se3

__all__ = [
    "ns_to_time",
    "time_to_ns",
    "matrix_to_transform",
    "transform_to_matrix",
    "matrix_to_transform_stamped",
    "matrix_to_pose",
    "pose_to_matrix",
    "left_covariance_to_ros",
    "ros_covariance_to_left",
    "matrix_to_pose_with_covariance_stamped",
]

_NS = 1_000_000_000


def ns_to_time(stamp_ns: int) -> Time:
    """Integer nanoseconds since the epoch (or since sim start) -> ``builtin_interfaces/Time``."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f"a ROS time cannot be negative, got {stamp_ns} ns")
    return Time(sec=stamp_ns // _NS, nanosec=stamp_ns % _NS)


def time_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def matrix_to_transform(T_parent_child) -> Transform:
    """(4, 4) ``T_parent_child`` -> ``geometry_msgs/Transform`` (translation in metres, quaternion x, y, z, w)."""
    t, q = se3.transform_to_translation_quat(T_parent_child)
    msg = Transform()
    msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in t)
    msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.rotation.w = (float(v) for v in q)
    return msg


def transform_to_matrix(msg) -> np.ndarray:
    """``geometry_msgs/Transform`` or ``TransformStamped`` -> (4, 4) ``T_parent_child``."""
    tf = getattr(msg, "transform", msg)
    t, r = tf.translation, tf.rotation
    return se3.transform_from_translation_quat([t.x, t.y, t.z], [r.x, r.y, r.z, r.w])


def matrix_to_transform_stamped(T_parent_child, *, parent_frame: str, child_frame: str,
                                stamp_ns: int | None = None, stamp: Time | None = None) -> TransformStamped:
    """(4, 4) ``T_parent_child`` -> ``TransformStamped`` (header.frame_id = parent, child_frame_id = child).

    Give the stamp either as nanoseconds (``stamp_ns``) or as a ``Time`` message (``stamp``).
    """
    if (stamp_ns is None) == (stamp is None):
        raise ValueError("give exactly one of stamp_ns and stamp")
    msg = TransformStamped()
    msg.header.stamp = ns_to_time(stamp_ns) if stamp is None else stamp
    msg.header.frame_id = parent_frame
    msg.child_frame_id = child_frame
    msg.transform = matrix_to_transform(T_parent_child)
    return msg


def matrix_to_pose(T_parent_child) -> Pose:
    """(4, 4) ``T_parent_child`` -> ``geometry_msgs/Pose`` of the child in the parent frame."""
    t, q = se3.transform_to_translation_quat(T_parent_child)
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in t)
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = (float(v) for v in q)
    return msg


def pose_to_matrix(msg) -> np.ndarray:
    """``geometry_msgs/Pose`` -> (4, 4) ``T_parent_child``."""
    p, o = msg.position, msg.orientation
    return se3.transform_from_translation_quat([p.x, p.y, p.z], [o.x, o.y, o.z, o.w])


def left_covariance_to_ros(T_parent_child, cov_left) -> np.ndarray:
    """(6, 6) left-perturbation covariance of ``T_parent_child`` -> ROS pose covariance (same frame).

    Both are ordered (x, y, z, rotX, rotY, rotZ), metres and radians, in the parent frame; see the
    module docstring for the Jacobian. Non-finite input (no estimate) is returned unchanged.
    """
    cov = np.asarray(cov_left, dtype=np.float64).reshape(6, 6)
    if not np.all(np.isfinite(cov)):
        return cov.copy()
    p = np.asarray(T_parent_child, dtype=np.float64)[:3, 3]
    J = np.eye(6)
    J[:3, 3:] = -np.array([[0.0, -p[2], p[1]], [p[2], 0.0, -p[0]], [-p[1], p[0], 0.0]])
    out = J @ cov @ J.T
    return 0.5 * (out + out.T)


def ros_covariance_to_left(T_parent_child, cov_ros) -> np.ndarray:
    """Inverse of :func:`left_covariance_to_ros` (e.g. for a covariance read back from a saved file)."""
    cov = np.asarray(cov_ros, dtype=np.float64).reshape(6, 6)
    if not np.all(np.isfinite(cov)):
        return cov.copy()
    p = np.asarray(T_parent_child, dtype=np.float64)[:3, 3]
    J_inv = np.eye(6)
    J_inv[:3, 3:] = np.array([[0.0, -p[2], p[1]], [p[2], 0.0, -p[0]], [-p[1], p[0], 0.0]])
    out = J_inv @ cov @ J_inv.T
    return 0.5 * (out + out.T)


def matrix_to_pose_with_covariance_stamped(T_parent_child, cov_left, *, parent_frame: str,
                                           stamp_ns: int) -> PoseWithCovarianceStamped:
    """Pose of the child in ``parent_frame`` with its covariance (left perturbation, see module docstring).

    ``cov_left`` may be None (unknown): the message then carries -1 on the diagonal's first element,
    the geometry_msgs convention for "covariance unknown".
    """
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.header.frame_id = parent_frame
    msg.pose.pose = matrix_to_pose(T_parent_child)
    if cov_left is None or not np.all(np.isfinite(cov_left)):
        cov = np.zeros((6, 6))
        cov[0, 0] = -1.0
    else:
        cov = left_covariance_to_ros(T_parent_child, cov_left)
    msg.pose.covariance = [float(v) for v in cov.reshape(-1)]
    return msg
