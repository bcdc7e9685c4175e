"""Camera viewpoints around a robot: a shell of distances and elevations, aimed near the robot."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import se3

__all__ = ["ShellConfig", "sample_camera_on_shell"]


@dataclass(frozen=True)
class ShellConfig:
    distance_m: tuple[float, float] = (0.8, 2.5)  # camera distance from the look-at target, metres
    elevation_deg: tuple[float, float] = (-5.0, 60.0)  # camera height angle above the target's horizontal plane
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)  # around the base z axis; 0 = looking along -x
    lookat_jitter_m: float = 0.1  # std of the look-at point around the target, metres
    roll_deg: float = 5.0  # std of the roll about the optical axis, degrees


def sample_camera_on_shell(rng: np.random.Generator, target, config: ShellConfig = ShellConfig()) -> np.ndarray:
    """Random ``T_base_camera`` (4, 4, optical frame) on a shell around ``target`` (3,) in the base frame.

    The camera looks at ``target`` plus Gaussian jitter, with the base +z axis as "up" before roll.
    """
    target = np.asarray(target, dtype=np.float64)
    d = rng.uniform(*config.distance_m)
    el = np.radians(rng.uniform(*config.elevation_deg))
    az = np.radians(rng.uniform(*config.azimuth_deg))
    look = target + rng.normal(0.0, config.lookat_jitter_m, 3)
    eye = target + d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return se3.look_at_optical(eye, look, up=(0.0, 0.0, 1.0), roll=np.radians(rng.normal(0.0, config.roll_deg)))


def sample_visible_view(rng: np.random.Generator, robot, spec, camera, config: ShellConfig = ShellConfig(), *,
                        margin_px: float = 5.0, max_tries: int = 200, q=None):
    """A random joint configuration and camera pose with every keypoint inside the image.

    Args:
        robot: :class:`~ctrnet_ros.core.robot.RobotModel`. spec: its :class:`KeypointSpec`.
        camera: :class:`~ctrnet_ros.core.camera.PinholeCamera`.
        q: fixed joint positions, or None to sample uniformly within limits.
    Returns:
        (q dict, T_camera_base (4, 4), keypoints_base (K, 3) metres, keypoints_uv (K, 2) pixels).
    """
    for _ in range(max_tries):
        qi = robot.sample_configuration(rng) if q is None else dict(q)
        kp = robot.keypoints_base(spec, qi)
        T_base_camera = sample_camera_on_shell(rng, kp.mean(axis=0), config)
        T_camera_base = se3.invert_transform(T_base_camera)
        uv = camera.project_from(T_camera_base, kp)
        if np.all(camera.in_image(uv, margin=margin_px)):
            return qi, T_camera_base, kp, uv
    raise RuntimeError(f"no view with all keypoints in the image after {max_tries} tries")
