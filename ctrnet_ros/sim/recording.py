"""A complete simulated recording: randomised scene, static (optionally bumped) camera, smooth robot motion.

Composes the renderer, a domain preset and the rosbag writer into what ``ctrnet-sim bag`` and
``make demo`` record: the camera frames the robot's whole sweep, appearance is fixed for the
recording (one room, one set of lights), and per-frame image effects (noise, blur, JPEG) vary.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

import numpy as np

from ..core import se3
from .bag import BagSummary, write_sim_bag
from .randomize import apply_image_effects, load_domain, sample_image_effects, sample_scene, smooth_joint_trajectory
from .render import MujocoRenderer

__all__ = ["BumpSpec", "record_sim_bag", "trajectory_bounds"]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class BumpSpec:
    """The camera is knocked at ``at_s``: it moves by ``translation_m`` and turns by ``rotation_deg``."""

    at_s: float  # trajectory seconds
    translation_m: float = 0.03  # length of the camera's displacement, metres
    rotation_deg: float = 2.0  # angle of the camera's rotation, degrees


def trajectory_bounds(robot, q_of_t, duration_s: float, *, samples: int = 60, pad: float = 0.15):
    """(centre (3,), radius) of a ball around every link origin over the trajectory, base frame, metres."""
    pts = np.concatenate([np.array([T[:3, 3] for T in robot.link_poses(q_of_t(t)).values()])
                          for t in np.linspace(0.0, duration_s, samples)])
    centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
    return centre, float(np.max(np.linalg.norm(pts - centre, axis=1)) + pad)


class _Shifted:
    """``t -> trajectory(t + offset)`` (and its velocity): a later window of a trajectory."""

    def __init__(self, trajectory, offset_s: float):
        self._trajectory, self._offset = trajectory, float(offset_s)

    def __call__(self, t: float):
        return self._trajectory(t + self._offset)

    def velocity(self, t: float):
        return self._trajectory.velocity(t + self._offset)


def _bumped(T_camera_base: np.ndarray, bump: BumpSpec, rng: np.random.Generator) -> np.ndarray:
    """Camera pose after a bump: a random displacement and rotation of the given sizes, in the camera frame."""
    d = rng.normal(size=3)
    axis = rng.normal(size=3)
    delta = se3.make_transform(se3.rvec_to_matrix(axis / np.linalg.norm(axis) * np.radians(bump.rotation_deg)),
                               d / np.linalg.norm(d) * bump.translation_m)
    # T_base_camera' = T_base_camera @ delta  =>  T_camera'_base = inv(delta) @ T_camera_base
    return se3.invert_transform(delta) @ T_camera_base


def record_sim_bag(out_dir: str | os.PathLike, *, domain: str = "train", duration_s: float = 10.0, seed: int = 0,
                   width: int = 640, height: int = 480, robot: str = "panda", camera_hz: float = 30.0,
                   joint_hz: float = 100.0, bump: BumpSpec | None = None, storage: str = "mcap",
                   compress: bool = False, cache_dir: str | os.PathLike | None = None,
                   domain_overrides: dict | None = None, scene_seed: int | None = None,
                   scene_duration_s: float | None = None, start_s: float = 0.0, progress: bool = True) -> BagSummary:
    """Render and record a simulated rosbag with ground truth (see :func:`~ctrnet_ros.sim.bag.write_sim_bag`).

    Deterministic per ``seed``. The robot moves along a smooth random trajectory; the camera is static,
    placed by the domain preset so that the robot's whole sweep stays in view (within the preset's
    distance range), and optionally bumped.

    Args:
        domain_overrides: replace preset fields, e.g. ``{"distance_m": (1.1, 1.5)}`` for a camera mounted
            the way a calibration camera usually is (the ``train`` preset spans 0.8-2.5 m).
        scene_seed: one recording of a *cell*: the scene (camera pose and intrinsics, room, lights,
            distractors, robot appearance) and the robot's trajectory come from ``scene_seed``, the
            trajectory spanning ``scene_duration_s`` with the camera placed to frame all of it; this
            recording plays its window ``[start_s, start_s + duration_s)``. ``seed`` then seeds only the
            stamp jitter and per-frame image noise. Recordings of one cell with disjoint windows share
            the fixed camera but never an image: e.g. collect unlabeled data in one window, test in another.
        scene_duration_s: the cell trajectory's span (default ``start_s + duration_s``).
        start_s: start of this recording's window on the cell trajectory (only with ``scene_seed``).
    """
    cfg = load_domain(domain)
    if domain_overrides:
        cfg = dataclasses.replace(cfg, **domain_overrides)
    renderer = MujocoRenderer.for_robot(robot, cache_dir=cache_dir)
    rng_traj, rng_scene, rng_bump = np.random.default_rng([seed, 0xBA6]).spawn(3)
    span, t0 = duration_s, 0.0
    if scene_seed is not None:
        span = float(scene_duration_s or start_s + duration_s)
        t0 = float(start_s)
        if t0 < 0 or t0 + duration_s > span + 1e-9:
            raise ValueError(f"window [{t0}, {t0 + duration_s}) s lies outside the cell's trajectory [0, {span}) s")
        rng_traj, rng_scene, _ = np.random.default_rng([scene_seed, 0xBA6]).spawn(3)
    elif start_s:
        raise ValueError("start_s needs scene_seed (a window on a cell's trajectory)")
    cell_traj = smooth_joint_trajectory(renderer.robot, rng_traj, span)
    bounds = trajectory_bounds(renderer.robot, cell_traj, span)
    scene = sample_scene(renderer, cfg, rng_scene, width=width, height=height, joint_positions=cell_traj(0.0),
                         bounds=bounds)
    traj = cell_traj if t0 == 0.0 else _Shifted(cell_traj, t0)
    renderer.set_appearance(scene.appearance)
    poses = scene.T_camera_base
    if bump is not None:
        if not 0.0 < bump.at_s < duration_s:
            raise ValueError(f"bump time {bump.at_s} s must lie inside the recording (0, {duration_s})")
        poses = [(0.0, scene.T_camera_base), (bump.at_s, _bumped(scene.T_camera_base, bump, rng_bump))]

    def effects(rgb, rng):
        return apply_image_effects(rgb, sample_image_effects(cfg, rng))

    summary = write_sim_bag(out_dir, renderer=renderer, robot=renderer.robot, camera=scene.camera,
                            T_camera_base=poses, q_of_t=traj, qd_of_t=traj.velocity, duration_s=duration_s,
                            camera_hz=camera_hz, joint_hz=joint_hz, storage=storage, compress=compress,
                            image_effects=effects, seed=seed, progress=progress)
    _LOG.info("recorded %s (%s)", summary.bag_path, ", ".join(f"{k}: {v}" for k, v in summary.message_counts.items()))
    return summary
