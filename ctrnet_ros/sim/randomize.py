"""Domain randomisation: camera poses, joint configurations, appearance and image effects.

Everything is drawn from a ``numpy.random.Generator``; the same generator state gives the same
scene, and :func:`sample_scene` splits its generator into independent children (joints, camera,
appearance, effects) so that changing, say, the lighting ranges does not change the joint samples.

Presets live in ``config/sim/<domain>.yaml`` (``train``, ``shifted``) and load into the frozen
:class:`DomainConfig` with :func:`load_domain`. Fields missing from a YAML keep their defaults;
unknown fields are an error.

Frames: the world frame is the robot's base frame (z up, floor at ``renderer.floor_z``); cameras
are optical frames (x right, y down, z forward). Units are metres, radians unless a name says
``_deg``/``_k``/``_px``.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import cv2
import numpy as np
import yaml

from ..core import se3
from ..core.camera import PinholeCamera
from ..core.robot import RobotModel, config_dir
from .frame import RenderedFrame
from .scene import DISTRACTOR_SHAPES, DistractorSpec, LightSpec, SceneAppearance, SurfaceSpec

if TYPE_CHECKING:  # only for annotations: keeps this module importable without OpenGL
    from .render import MujocoRenderer

__all__ = [
    "TEXTURE_KINDS",
    "DomainConfig",
    "ImageEffects",
    "SceneSample",
    "SmoothJointTrajectory",
    "load_domain",
    "available_domains",
    "sample_joint_configuration",
    "smooth_joint_trajectory",
    "robot_bounds",
    "sample_camera",
    "procedural_texture",
    "color_temperature_rgb",
    "sample_appearance",
    "sample_image_effects",
    "apply_image_effects",
    "sample_scene",
    "render_scene_sample",
]

#: Procedural texture generators known to :func:`procedural_texture`.
TEXTURE_KINDS = ("flat", "gradient", "noise", "checker", "stripes", "marble")

Range = tuple[float, float]


@dataclass(frozen=True)
class DomainConfig:
    """Ranges of one randomisation domain. ``(lo, hi)`` pairs are sampled uniformly unless noted."""

    name: str = "train"  # domain label, recorded in datasets

    # -- camera -----------------------------------------------------------------------------
    distance_m: Range = (0.8, 2.5)  # camera distance from the look-at point, metres
    elevation_deg: Range = (-5.0, 60.0)  # camera elevation above the look-at point's horizontal plane
    azimuth_deg: Range = (-180.0, 180.0)  # camera azimuth about the base z axis, 0 = on the base +x axis
    target_jitter_m: float = 0.10  # std of the look-at point around the robot's bounding-box centre, per axis
    roll_deg: float = 8.0  # std of the rotation about the optical axis, degrees
    fovy_deg: Range = (40.0, 65.0)  # vertical field of view, degrees
    focal_aspect_jitter: float = 0.02  # fx / fy - 1 drawn in [-this, this]
    principal_point_jitter: float = 0.02  # principal point offset from the centre, fraction of width/height
    max_fill: float = 0.9  # robot bounding-sphere radius may cover at most this fraction of half the image height
    min_camera_height_m: float = 0.1  # camera stays at least this high above the floor, metres

    # -- joints -----------------------------------------------------------------------------
    joint_margin: float = 0.02  # fraction of each joint's range kept clear of its limits
    min_link_height_m: float = 0.05  # reject configurations with a non-base link origin this close to the floor
    max_joint_tries: int = 50  # rejection-sampling attempts before accepting a configuration anyway

    # -- lights -----------------------------------------------------------------------------
    num_lights: tuple[int, int] = (1, 3)  # number of lights, inclusive range
    light_intensity: Range = (0.35, 0.9)  # diffuse intensity per light, 0..1
    light_temperature_k: Range = (4500.0, 7500.0)  # light colour temperature, kelvin
    light_elevation_deg: Range = (25.0, 80.0)  # light direction's angle below the horizon, degrees
    spot_probability: float = 0.3  # chance a light is a spot light (else directional)
    shadow_probability: float = 0.0  # chance a light casts shadows (2-3x render time on CPU)
    ambient: Range = (0.15, 0.4)  # global ambient intensity, 0..1
    specular_light: Range = (0.1, 0.4)  # specular intensity per light, 0..1

    # -- robot material ---------------------------------------------------------------------
    robot_brightness: Range = (0.8, 1.1)  # multiplies every robot colour
    robot_tint: float = 0.08  # per-channel multiplicative colour jitter, shared by all parts
    robot_part_tint: float = 0.03  # additional per-colour-class jitter
    robot_specular: Range = (0.2, 0.6)  # material specularity, 0..1
    robot_shininess: Range = (0.2, 0.7)  # material shininess, 0..1

    # -- room -------------------------------------------------------------------------------
    floor_probability: float = 0.95  # chance the floor is drawn
    walls_probability: float = 0.9  # chance walls and ceiling are drawn (else a procedural backdrop image)
    room_half_extent_m: Range = (3.0, 6.0)  # walls at +-this from the robot base, metres
    room_height_m: Range = (2.5, 4.0)  # ceiling height, metres
    texture_kinds: tuple[str, ...] = ("flat", "gradient", "noise")  # procedural textures for floor, walls, backdrop
    texture_contrast: Range = (0.05, 0.35)  # brightness difference of a texture's two colours, 0..1
    texture_scale_m: Range = (0.3, 2.0)  # metres one texture tile spans on floor and walls
    surface_saturation: Range = (0.0, 0.35)  # HSV saturation of floor/wall colours
    surface_value: Range = (0.3, 0.9)  # HSV value of floor/wall colours
    floor_reflectance: Range = (0.0, 0.0)  # floor mirror reflectance (> 0 adds a render pass; shows artefacts)

    # -- distractors ------------------------------------------------------------------------
    num_distractors: tuple[int, int] = (0, 5)  # primitives standing or floating around the robot, inclusive range
    distractor_size_m: Range = (0.03, 0.2)  # distractor half-size, metres
    occluder_probability: float = 0.3  # chance the frame has one occluder between camera and robot
    occluder_size_m: Range = (0.02, 0.08)  # occluder half-size (rods: radius), metres
    distractor_texture_kinds: tuple[str, ...] = ("flat", "noise", "checker")  # textures shared by distractors

    # -- image effects ----------------------------------------------------------------------
    exposure: Range = (0.75, 1.3)  # linear-light gain
    gamma: Range = (0.9, 1.1)  # output gamma adjustment
    white_balance: float = 0.06  # per-channel gain jitter, fraction
    noise_std: Range = (0.0, 3.0)  # Gaussian sensor noise std, 8-bit levels
    motion_blur_probability: float = 0.15  # chance of linear motion blur
    motion_blur_px: Range = (2.0, 7.0)  # motion blur length, pixels at 640 px width (scaled with the image)
    defocus_probability: float = 0.15  # chance of Gaussian defocus blur
    defocus_sigma_px: Range = (0.3, 1.2)  # defocus sigma, pixels at 640 px width
    jpeg_probability: float = 0.3  # chance of JPEG re-compression
    jpeg_quality: tuple[int, int] = (50, 95)  # JPEG quality, inclusive range
    vignetting: Range = (0.0, 0.0)  # corner darkening, 0 (none) .. 1 (black corners)
    chromatic_aberration_px: Range = (0.0, 0.0)  # red/blue channel shift at the corners, pixels at 640 px width

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):  # YAML gives lists; keep the dataclass hashable and immutable
                object.__setattr__(self, f.name, tuple(v))
                v = tuple(v)
            if f.type in ("Range", "tuple[int, int]"):
                if len(v) != 2 or not v[0] <= v[1]:
                    raise ValueError(f"DomainConfig.{f.name} must be a (lo, hi) pair with lo <= hi, got {v}")
            if f.name.endswith("probability") and not 0.0 <= v <= 1.0:
                raise ValueError(f"DomainConfig.{f.name} must be in [0, 1], got {v}")
        for kinds in (self.texture_kinds, self.distractor_texture_kinds):
            unknown = set(kinds) - set(TEXTURE_KINDS)
            if unknown or not kinds:
                raise ValueError(f"texture kinds must be a non-empty subset of {TEXTURE_KINDS}, got {kinds}")
        if self.distance_m[0] <= 0 or self.fovy_deg[0] <= 0 or self.fovy_deg[1] >= 179:
            raise ValueError("distance_m must be positive and fovy_deg within (0, 179)")

    @classmethod
    def from_dict(cls, d: Mapping) -> "DomainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DomainConfig field(s): {sorted(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "DomainConfig":
        with open(path, encoding="utf-8") as f:
            d = yaml.safe_load(f) or {}
        d.setdefault("name", Path(path).stem)
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        """Plain-Python dict (lists for pairs), e.g. for ``index.json``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def available_domains() -> list[str]:
    """Names of the presets in ``config/sim``."""
    return sorted(p.stem for p in (config_dir() / "sim").glob("*.yaml"))


def load_domain(name_or_path: str | os.PathLike) -> DomainConfig:
    """A preset by name (``"train"``, ``"shifted"``: ``config/sim/<name>.yaml``) or a YAML file path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return DomainConfig.from_yaml(p)
    path = config_dir() / "sim" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown domain {str(name_or_path)!r}; available: {available_domains()}")
    return DomainConfig.from_yaml(path)


# --------------------------------------------------------------------------------------------
# Joint configurations
# --------------------------------------------------------------------------------------------
def _joint_ranges(robot: RobotModel, names: Sequence[str], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(J,), (J,) lower/upper bounds shrunk by ``margin`` of the range; unbounded joints use [-pi, pi]."""
    lim = robot.joint_limits(names)
    lo = np.where(np.isfinite(lim[:, 0]), lim[:, 0], -math.pi)
    hi = np.where(np.isfinite(lim[:, 1]), lim[:, 1], math.pi)
    span = hi - lo
    return lo + margin * span, hi - margin * span


def _lowest_link_height(robot: RobotModel, q: Mapping[str, float]) -> float:
    poses = robot.link_poses(q)
    return min(float(T[2, 3]) for link, T in poses.items() if link != robot.base_link
               and np.linalg.norm(T[:3, 3]) > 0.05)  # links at the base's origin sit on the floor by design


def sample_joint_configuration(robot: RobotModel, rng: np.random.Generator, *, margin: float = 0.02,
                               floor_z: float | None = None, min_link_height: float = 0.05,
                               max_tries: int = 50) -> dict[str, float]:
    """Uniform joint positions within limits, rejecting arms that reach into the floor.

    Args:
        robot: the robot; all of ``robot.joint_names`` are sampled.
        rng: random generator.
        margin: fraction of each joint range kept clear of the limits.
        floor_z: floor height in the base frame (metres); None disables the floor check.
        min_link_height: every link origin (except those at the base origin) must be this far above
            the floor, metres.
        max_tries: attempts before the last sample is returned anyway.
    Returns:
        joint name -> position (radians / metres).
    """
    q = robot.sample_configuration(rng, margin=margin)
    if floor_z is None:
        return q
    for _ in range(max_tries - 1):
        if _lowest_link_height(robot, q) >= floor_z + min_link_height:
            break
        q = robot.sample_configuration(rng, margin=margin)
    return q


class SmoothJointTrajectory:
    """Smooth joint motion inside the limits: ``q_j(t) = c_j + r_j sin(theta_j(t))``.

    ``theta_j(t) = phi_j + w_j t + sum_k a_jk sin(2 pi f_jk t + psi_jk)`` is a sum of sinusoids, so
    every joint stays within ``[c_j - r_j, c_j + r_j]`` (inside its limits) with no clipping kinks,
    and speeds are bounded by ``r_j (|w_j| + sum_k 2 pi f_jk |a_jk|) <= max_speed``.

    Call it with a time in seconds to get ``{joint: position}``; :meth:`velocity` gives the
    derivative (rad/s or m/s). Build it with :func:`smooth_joint_trajectory`.
    """

    def __init__(self, names: Sequence[str], center: np.ndarray, radius: np.ndarray, phase: np.ndarray,
                 drift: np.ndarray, amp: np.ndarray, freq: np.ndarray, psi: np.ndarray, duration_s: float):
        self.joint_names = list(names)
        self._c, self._r, self._phi, self._w = center, radius, phase, drift
        self._a, self._f, self._psi = amp, freq, psi  # (J, M)
        self.duration_s = float(duration_s)

    def _theta(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        arg = 2.0 * np.pi * self._f * t + self._psi
        theta = self._phi + self._w * t + np.sum(self._a * np.sin(arg), axis=1)
        dtheta = self._w + np.sum(self._a * 2.0 * np.pi * self._f * np.cos(arg), axis=1)
        return theta, dtheta

    def positions(self, t: float) -> np.ndarray:
        """(J,) joint positions at time ``t`` seconds, in :attr:`joint_names` order."""
        theta, _ = self._theta(float(t))
        return self._c + self._r * np.sin(theta)

    def velocity(self, t: float) -> dict[str, float]:
        """Joint velocities at ``t`` seconds: joint name -> rad/s (or m/s)."""
        theta, dtheta = self._theta(float(t))
        return dict(zip(self.joint_names, (self._r * np.cos(theta) * dtheta).tolist()))

    def __call__(self, t: float) -> dict[str, float]:
        return dict(zip(self.joint_names, self.positions(t).tolist()))


def smooth_joint_trajectory(robot: RobotModel, rng: np.random.Generator, duration_s: float, *,
                            max_speed: float = 0.5, num_harmonics: int = 3, frequency_hz: Range = (0.02, 0.25),
                            amplitude: float = 0.6, margin: float = 0.05,
                            start: Mapping[str, float] | None = None) -> SmoothJointTrajectory:
    """A random, smooth joint trajectory within the limits (for rosbags and video-like sequences).

    Args:
        robot: all of ``robot.joint_names`` move.
        rng: random generator (same state -> same trajectory).
        duration_s: nominal length, seconds (the trajectory is defined for any t; this sets how
            many slow oscillations fit).
        max_speed: bound on each joint's speed, rad/s (m/s for prismatic joints scale with their range).
        num_harmonics: sinusoids per joint.
        frequency_hz: range of their frequencies; at least one slow cycle per ``duration_s``.
        amplitude: fraction of the available half-range each joint sweeps around its centre.
        margin: fraction of each joint's range kept clear of the limits.
        start: optional positions at t = 0 (clipped into the limits); default random.
    Returns:
        :class:`SmoothJointTrajectory`, callable ``t -> {joint: position}``.
    """
    names = list(robot.joint_names)
    lo, hi = _joint_ranges(robot, names, margin)
    J, M = len(names), int(num_harmonics)
    inner_lo, inner_hi = lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo)
    if start is None:
        q0 = None
        center = rng.uniform(inner_lo, inner_hi)
    else:
        q0 = np.clip(np.array([float(start[n]) for n in names]), lo, hi)
        center = np.clip(q0, inner_lo, inner_hi)
    radius = amplitude * np.minimum(center - lo, hi - center)
    f_lo = max(frequency_hz[0], 1.0 / max(duration_s, 1e-3))
    freq = rng.uniform(f_lo, max(f_lo, frequency_hz[1]), size=(J, M))
    amp = rng.uniform(0.3, 1.5, size=(J, M))
    psi = rng.uniform(0.0, 2.0 * np.pi, size=(J, M))
    drift = rng.uniform(-1.0, 1.0, size=J) * 2.0 * np.pi * f_lo
    phase = rng.uniform(0.0, 2.0 * np.pi, size=J)
    # Scale each joint's angular rate so that its speed bound meets max_speed.
    bound = radius * (np.abs(drift) + np.sum(2.0 * np.pi * freq * amp, axis=1))
    scale = np.where(bound > max_speed, max_speed / np.maximum(bound, 1e-12), 1.0)
    amp *= scale[:, None]
    drift *= scale
    if q0 is not None:
        # Choose phi so that q(0) = q0: sin(theta(0)) = (q0 - c) / r (q0 may lie outside the sweep;
        # then the trajectory starts at the nearest point of it).
        s = np.clip(np.divide(q0 - center, radius, out=np.zeros(J), where=radius > 0), -1.0, 1.0)
        phase = np.arcsin(s) - np.sum(amp * np.sin(psi), axis=1)
    return SmoothJointTrajectory(names, center, radius, phase, drift, amp, freq, psi, duration_s)


# --------------------------------------------------------------------------------------------
# Camera
# --------------------------------------------------------------------------------------------
def robot_bounds(robot: RobotModel, joint_positions: Mapping[str, float], *,
                 pad: float = 0.15) -> tuple[np.ndarray, float]:
    """Centre (3,) of the axis-aligned box around all link origins, and a bounding radius (metres).

    ``pad`` (metres) is added to the radius for the meshes around the origins.
    """
    pts = np.array([T[:3, 3] for T in robot.link_poses(joint_positions).values()])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = 0.5 * (lo + hi)
    return center, float(np.max(np.linalg.norm(pts - center, axis=1)) + pad)


def sample_camera(config: DomainConfig, rng: np.random.Generator, *, width: int, height: int,
                  target_center: np.ndarray, target_radius: float,
                  floor_z: float = 0.0) -> tuple[PinholeCamera, np.ndarray]:
    """A random camera on a shell around the robot, aimed at (a jittered) ``target_center``.

    Args:
        config: ranges (distance, elevation, azimuth, jitter, roll, field of view, intrinsics).
        rng: random generator.
        width, height: image size, pixels.
        target_center: (3,) robot bounding-box centre, base frame, metres.
        target_radius: robot bounding radius, metres; the camera backs off so that the robot
            fills at most ``config.max_fill`` of half the image height (within ``distance_m``).
        floor_z: floor height; the camera stays ``config.min_camera_height_m`` above it.
    Returns:
        (camera without distortion, ``T_camera_base`` (4, 4)).
    """
    fovy = math.radians(rng.uniform(*config.fovy_deg))
    fy = (height / 2.0) / math.tan(fovy / 2.0)
    fx = fy * (1.0 + rng.uniform(-config.focal_aspect_jitter, config.focal_aspect_jitter))
    cx = width / 2.0 - 0.5 + rng.uniform(-1.0, 1.0) * config.principal_point_jitter * width
    cy = height / 2.0 - 0.5 + rng.uniform(-1.0, 1.0) * config.principal_point_jitter * height
    camera = PinholeCamera(K=np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]), D=np.zeros(5),
                           width=width, height=height, distortion_model="plumb_bob")

    target = np.asarray(target_center, dtype=np.float64) + rng.normal(0.0, config.target_jitter_m, size=3)
    d_lo, d_hi = config.distance_m
    d_fit = target_radius / (config.max_fill * math.tan(fovy / 2.0))
    dist = float(np.clip(max(rng.uniform(d_lo, d_hi), d_fit), d_lo, d_hi))
    az = math.radians(rng.uniform(*config.azimuth_deg))
    el = math.radians(rng.uniform(*config.elevation_deg))
    z_min = floor_z + config.min_camera_height_m
    if target[2] + dist * math.sin(el) < z_min:  # too low: raise the camera to the floor limit
        el = math.asin(np.clip((z_min - target[2]) / dist, -1.0, 1.0))
    eye = target + dist * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    roll = math.radians(rng.normal(0.0, config.roll_deg))
    T_base_camera = se3.look_at_optical(eye, target, up=(0.0, 0.0, 1.0), roll=roll)
    return camera, se3.invert_transform(T_base_camera)


# --------------------------------------------------------------------------------------------
# Textures and colours
# --------------------------------------------------------------------------------------------
def _periodic_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """(size, size) float32 noise in [0, 1] with a 1/f^beta spectrum; tiles seamlessly (built by FFT)."""
    white = rng.standard_normal((size, size))
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    radius[0, 0] = np.inf  # no DC term
    field = np.fft.ifft2(np.fft.fft2(white) / radius ** beta).real
    lo, hi = field.min(), field.max()
    return ((field - lo) / max(hi - lo, 1e-12)).astype(np.float32)


def procedural_texture(rng: np.random.Generator, size: int, kind: str, color_a: np.ndarray,
                       color_b: np.ndarray) -> np.ndarray:
    """A generated (size, size, 3) uint8 texture mixing two RGB colours (0..1); every kind tiles seamlessly.

    Kinds: ``flat`` (colour a), ``gradient`` (a smooth cosine wave with a whole number of periods per
    tile, random direction), ``noise`` (1/f^beta cloud noise), ``checker`` (2-8 cells per tile),
    ``stripes`` (sinusoidal, 2-11 periods), ``marble`` (stripes warped by noise).
    """
    a = np.asarray(color_a, dtype=np.float32)
    b = np.asarray(color_b, dtype=np.float32)
    if kind == "flat":
        return np.broadcast_to(np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8), (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "gradient":
        kx, ky = (int(k) for k in rng.integers(-1, 2, size=2))
        if kx == 0 and ky == 0:
            kx = 1
        t = 0.5 - 0.5 * np.cos(2.0 * np.pi * (kx * xx + ky * yy))
    elif kind == "noise":
        t = _periodic_noise(rng, size, beta=float(rng.uniform(1.2, 2.2)))
    elif kind == "checker":
        n = int(rng.integers(2, 9))
        t = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float32)
    elif kind == "stripes":
        n = int(rng.integers(2, 12))
        t = 0.5 + 0.5 * np.sin(2.0 * np.pi * n * (yy if rng.random() < 0.5 else xx))
    elif kind == "marble":
        warp = _periodic_noise(rng, size, beta=float(rng.uniform(1.5, 2.2)))
        n = int(rng.integers(2, 8))
        t = 0.5 + 0.5 * np.sin(2.0 * np.pi * (n * xx + 2.0 * warp))
    else:
        raise ValueError(f"unknown texture kind {kind!r}; known: {TEXTURE_KINDS}")
    a, b = np.clip(a, 0.0, 1.0) * np.float32(255.0), np.clip(b, 0.0, 1.0) * np.float32(255.0)
    img = a + (b - a) * np.clip(t, 0.0, 1.0).astype(np.float32)[..., None]  # convex mix: stays in 0..255
    return (img + np.float32(0.5)).astype(np.uint8)


def color_temperature_rgb(kelvin: float) -> np.ndarray:
    """(3,) RGB of a black body at ``kelvin`` (1000..40000 K), normalised to a maximum of 1.

    Tanner Helland's fit to the CIE 1964 black-body colours; accurate to a few percent, which is
    plenty for light tints.
    """
    t = float(np.clip(kelvin, 1000.0, 40000.0)) / 100.0
    r = 255.0 if t <= 66 else 329.698727446 * (t - 60) ** -0.1332047592
    g = 99.4708025861 * math.log(t) - 161.1195681661 if t <= 66 else 288.1221695283 * (t - 60) ** -0.0755148492
    if t >= 66:
        b = 255.0
    elif t <= 19:
        b = 0.0
    else:
        b = 138.5177312231 * math.log(t - 10) - 305.0447927307
    rgb = np.clip(np.array([r, g, b]), 0.0, 255.0)
    return rgb / rgb.max()


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _random_color(rng: np.random.Generator, saturation: Range, value: Range) -> np.ndarray:
    return _hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(*saturation), rng.uniform(*value))


def _random_surface(config: DomainConfig, rng: np.random.Generator, texture_size: int, *,
                    reflectance: float = 0.0) -> SurfaceSpec:
    """A floor/wall material: a procedural texture between two related colours, white-multiplied."""
    base = _random_color(rng, config.surface_saturation, config.surface_value)
    contrast = rng.uniform(*config.texture_contrast)
    other = np.clip(base + (contrast if base.mean() < 0.5 else -contrast) + rng.normal(0, 0.03, 3), 0.0, 1.0)
    kind = config.texture_kinds[int(rng.integers(len(config.texture_kinds)))]
    texture = procedural_texture(rng, texture_size, kind, base, other)
    tile = rng.uniform(*config.texture_scale_m)
    return SurfaceSpec(rgba=np.ones(4), texture=texture, texrepeat=(1.0 / tile, 1.0 / tile),
                       specular=float(rng.uniform(0.0, 0.3)), shininess=float(rng.uniform(0.0, 0.5)),
                       reflectance=reflectance)


# --------------------------------------------------------------------------------------------
# Appearance
# --------------------------------------------------------------------------------------------
def _quat_xyzw_random(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return q / np.linalg.norm(q)


def _primitive_size(rng: np.random.Generator, shape: str, size_range: Range) -> np.ndarray:
    """(3,) MuJoCo geom size for ``shape`` with its characteristic dimension in ``size_range``."""
    s = rng.uniform(*size_range, size=3)
    if shape == "sphere":
        s[1:] = s[0]
    elif shape in ("capsule", "cylinder"):
        s[1] = s[1] * rng.uniform(1.0, 4.0)  # half-length: rods, cans, cables
        s[2] = 0.0
    return s


def _sample_distractor(config: DomainConfig, rng: np.random.Generator, *, floor_z: float) -> DistractorSpec:
    """A primitive standing on the floor (or floating above it) 0.35-1.8 m from the robot base."""
    shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
    s = _primitive_size(rng, shape, config.distractor_size_m)
    r = rng.uniform(0.35, 1.8)
    ang = rng.uniform(0.0, 2.0 * np.pi)
    pos = np.array([r * math.cos(ang), r * math.sin(ang), floor_z + float(np.max(s)) * rng.uniform(0.3, 1.0)])
    if rng.random() < 0.3:  # some float: shelves, lamps, hanging things
        pos[2] += rng.uniform(0.2, 1.2)
    color = _random_color(rng, (0.0, 1.0), (0.1, 1.0))
    return DistractorSpec(shape=shape, size=s, pos=pos, quat_xyzw=_quat_xyzw_random(rng), rgba=np.append(color, 1.0))


def _sample_occluder(config: DomainConfig, rng: np.random.Generator, *, target: np.ndarray,
                     eye: np.ndarray) -> DistractorSpec:
    """A small primitive near the line of sight, 35-75% of the way from the camera to ``target``."""
    shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
    s = _primitive_size(rng, shape, config.occluder_size_m)
    dist = float(np.linalg.norm(target - eye))
    pos = eye + rng.uniform(0.35, 0.75) * (target - eye) + rng.normal(0.0, 0.08 * dist, size=3)
    color = _random_color(rng, (0.0, 1.0), (0.1, 1.0))
    return DistractorSpec(shape=shape, size=s, pos=pos, quat_xyzw=_quat_xyzw_random(rng), rgba=np.append(color, 1.0))


def sample_appearance(config: DomainConfig, rng: np.random.Generator, *, base_rgba: np.ndarray,
                      floor_z: float, target: np.ndarray, eye: np.ndarray | None = None,
                      num_light_slots: int = 4, num_distractor_slots: int = 12,
                      texture_size: int = 256) -> SceneAppearance:
    """A random :class:`SceneAppearance`: lights, robot colours, room, backdrop and distractors.

    Args:
        config: ranges.
        rng: random generator.
        base_rgba: (C, 4) the URDF's robot colours (``renderer.robot_base_rgba``).
        floor_z: floor height in the base frame, metres.
        target: (3,) point the camera looks at (lights and occluders aim there), metres.
        eye: (3,) camera position, metres; needed to place an occluder on the line of sight.
        num_light_slots, num_distractor_slots, texture_size: the renderer's capacities.
    """
    target = np.asarray(target, dtype=np.float64)
    # Lights.
    n_lights = int(rng.integers(config.num_lights[0], config.num_lights[1] + 1))
    n_lights = max(1, min(n_lights, num_light_slots))
    lights = []
    for _ in range(n_lights):
        az = rng.uniform(0.0, 2.0 * np.pi)
        el = math.radians(rng.uniform(*config.light_elevation_deg))
        toward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        color = color_temperature_rgb(rng.uniform(*config.light_temperature_k))
        intensity = rng.uniform(*config.light_intensity)
        spot = rng.random() < config.spot_probability
        shadow = bool(rng.random() < config.shadow_probability)
        pos = target + rng.uniform(2.0, 3.5) * toward
        pos[2] = min(pos[2], floor_z + 3.0)
        direction = target - pos if spot else -toward
        # Spot cones: MuJoCo's hard cone edge renders jagged, so the fall-off must have faded to 2%
        # there; shadow maps of wide cones alias badly, so shadowed spots get narrower ones.
        cutoff = rng.uniform(40.0, 60.0) if shadow else rng.uniform(60.0, 85.0)
        exponent = max(rng.uniform(3.0, 20.0), math.log(0.02) / math.log(math.cos(math.radians(cutoff))))
        lights.append(LightSpec(pos=pos, direction=direction / np.linalg.norm(direction),
                                diffuse=intensity * color * (2.0 if spot else 1.0),
                                specular=rng.uniform(*config.specular_light) * color,
                                directional=not spot, cast_shadow=shadow, cutoff_deg=float(cutoff),
                                exponent=float(exponent)))
    ambient = rng.uniform(*config.ambient) * color_temperature_rgb(rng.uniform(*config.light_temperature_k))

    # Robot colours: a shared tint plus a small per-class jitter, times a brightness.
    base_rgba = np.asarray(base_rgba, dtype=np.float64)
    tint = 1.0 + rng.uniform(-config.robot_tint, config.robot_tint, size=3)
    part = 1.0 + rng.uniform(-config.robot_part_tint, config.robot_part_tint, size=(len(base_rgba), 3))
    rgb = np.clip(base_rgba[:, :3] * tint * part * rng.uniform(*config.robot_brightness), 0.0, 1.0)
    robot_rgba = np.concatenate([rgb, base_rgba[:, 3:]], axis=1)

    # Room.
    floor = None
    if rng.random() < config.floor_probability:
        floor = _random_surface(config, rng, texture_size, reflectance=float(rng.uniform(*config.floor_reflectance)))
    walls, background = None, None
    if rng.random() < config.walls_probability:
        walls = _random_surface(config, rng, texture_size)
    else:
        c1 = _random_color(rng, (0.0, 1.0), (0.1, 1.0))
        c2 = _random_color(rng, (0.0, 1.0), (0.1, 1.0))
        kind = config.texture_kinds[int(rng.integers(len(config.texture_kinds)))]
        background = procedural_texture(rng, texture_size, kind, c1, c2)

    # Distractors.
    n_dis = int(rng.integers(config.num_distractors[0], config.num_distractors[1] + 1))
    n_dis = min(n_dis, num_distractor_slots)
    dis_texture = None
    if n_dis > 0 or config.occluder_probability > 0:
        kind = config.distractor_texture_kinds[int(rng.integers(len(config.distractor_texture_kinds)))]
        dis_texture = procedural_texture(rng, texture_size, kind, np.ones(3), np.full(3, rng.uniform(0.2, 0.8)))
    distractors = []
    for _ in range(n_dis):
        for _attempt in range(10):  # keep clear of the camera: a primitive around the lens hides everything
            obj = _sample_distractor(config, rng, floor_z=floor_z)
            if eye is None or np.linalg.norm(obj.pos - eye) > 0.3 + 2.0 * float(np.max(obj.size)):
                distractors.append(obj)
                break
    if eye is not None and rng.random() < config.occluder_probability and len(distractors) < num_distractor_slots:
        distractors.append(_sample_occluder(config, rng, target=target, eye=np.asarray(eye, dtype=np.float64)))
    return SceneAppearance(
        lights=tuple(lights), ambient=ambient, robot_rgba=robot_rgba,
        robot_specular=float(rng.uniform(*config.robot_specular)),
        robot_shininess=float(rng.uniform(*config.robot_shininess)),
        floor=floor, walls=walls, room_half_extent=float(rng.uniform(*config.room_half_extent_m)),
        room_height=float(rng.uniform(*config.room_height_m)), background=background,
        distractor_surface=SurfaceSpec(rgba=np.ones(4), texture=dis_texture, texrepeat=(1.0, 1.0),
                                       specular=float(rng.uniform(0.0, 0.6)),
                                       shininess=float(rng.uniform(0.0, 0.8))),
        distractors=tuple(distractors))


# --------------------------------------------------------------------------------------------
# Image effects
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageEffects:
    """Camera/sensor effects applied to a clean render, in this order. Pixel sizes refer to 640 px width."""

    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gain (R, G, B) in linear light
    exposure: float = 1.0  # linear-light gain
    gamma: float = 1.0  # output = input ** (1 / gamma), on 0..1 values
    vignetting: float = 0.0  # corner darkening, 0..1
    chromatic_aberration_px: float = 0.0  # radial red/blue misregistration at the corners, pixels
    motion_blur_px: float = 0.0  # linear blur length, pixels (0: none)
    motion_blur_angle_deg: float = 0.0  # blur direction in the image, degrees
    defocus_sigma_px: float = 0.0  # Gaussian blur sigma, pixels (0: none)
    noise_std: float = 0.0  # Gaussian noise std, 8-bit levels
    noise_seed: int = 0  # seed of the noise pattern (keeps effects pure functions of this record)
    jpeg_quality: int | None = None  # JPEG re-compression quality, None for none


def sample_image_effects(config: DomainConfig, rng: np.random.Generator) -> ImageEffects:
    """Random :class:`ImageEffects` within ``config``'s ranges."""
    wb = tuple((1.0 + rng.uniform(-config.white_balance, config.white_balance, size=3)).tolist())
    blur = rng.uniform(*config.motion_blur_px) if rng.random() < config.motion_blur_probability else 0.0
    angle = rng.uniform(0.0, 180.0)
    defocus = rng.uniform(*config.defocus_sigma_px) if rng.random() < config.defocus_probability else 0.0
    jpeg = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)) \
        if rng.random() < config.jpeg_probability else None
    return ImageEffects(white_balance=wb, exposure=float(rng.uniform(*config.exposure)),
                        gamma=float(rng.uniform(*config.gamma)), vignetting=float(rng.uniform(*config.vignetting)),
                        chromatic_aberration_px=float(rng.uniform(*config.chromatic_aberration_px)),
                        motion_blur_px=float(blur), motion_blur_angle_deg=float(angle),
                        defocus_sigma_px=float(defocus), noise_std=float(rng.uniform(*config.noise_std)),
                        noise_seed=int(rng.integers(2 ** 31)), jpeg_quality=jpeg)


def _motion_blur_kernel(length: float, angle_deg: float) -> np.ndarray:
    n = int(math.ceil(length)) | 1
    k = np.zeros((n, n), dtype=np.float32)
    c = (n - 1) / 2.0
    a = math.radians(angle_deg)
    for s in np.linspace(-length / 2.0, length / 2.0, 4 * n):
        x, y = c + s * math.cos(a), c + s * math.sin(a)
        xi, yi = int(round(x)), int(round(y))
        if 0 <= xi < n and 0 <= yi < n:
            k[yi, xi] += 1.0
    return k / k.sum()


#: 8-bit display value -> linear light (a plain 2.2 power law), float32.
_DECODE_LUT = ((np.arange(256, dtype=np.float64) / 255.0) ** 2.2).astype(np.float32)
#: Resolution of the linear -> display lookup table (16 bits keeps deep shadows within 2 levels).
_ENCODE_BINS = 65536


def apply_image_effects(rgb: np.ndarray, effects: ImageEffects) -> np.ndarray:
    """Apply ``effects`` to an (H, W, 3) uint8 RGB image; returns a new (H, W, 3) uint8 image.

    Exposure, white balance and vignetting act on (approximately) linear light, gamma encodes back
    to 8-bit values, then aberration, blur, noise and JPEG act on the encoded image, as in a camera.
    Geometric ground truth is unchanged (blur and aberration only spread colour around it).
    Deterministic: the same image and record give the same bytes.
    """
    H, W = rgb.shape[:2]
    px = W / 640.0  # effect sizes are specified at 640 px width
    img = _DECODE_LUT[rgb]  # (H, W, 3) float32 linear light
    img *= np.asarray(effects.white_balance, dtype=np.float32) * np.float32(effects.exposure)
    if effects.vignetting > 0:
        x2 = ((np.arange(W, dtype=np.float32) - (W - 1) / 2) / (W / 2)) ** 2
        y2 = ((np.arange(H, dtype=np.float32) - (H - 1) / 2) / (W / 2)) ** 2
        r2 = np.clip((y2[:, None] + x2[None, :]) / np.float32(1.0 + (H / W) ** 2), 0.0, 1.0)
        img *= (1.0 - np.float32(effects.vignetting) * r2 * np.sqrt(r2))[..., None]
    # Encode through a lookup table instead of a per-pixel power.
    encode = (255.0 * np.linspace(0.0, 1.0, _ENCODE_BINS) ** (1.0 / (2.2 * effects.gamma))).astype(np.float32)
    idx = np.clip(img * np.float32(_ENCODE_BINS - 1) + np.float32(0.5), 0, _ENCODE_BINS - 1).astype(np.uint16)
    out = encode[idx]  # (H, W, 3) float32, 0..255
    if effects.chromatic_aberration_px > 0:
        shift = effects.chromatic_aberration_px * px / (0.5 * math.hypot(W, H))
        for ch, sgn in ((0, 1.0), (2, -1.0)):
            s = 1.0 + sgn * shift
            M = np.array([[s, 0, (1 - s) * (W - 1) / 2], [0, s, (1 - s) * (H - 1) / 2]], dtype=np.float32)
            out[..., ch] = cv2.warpAffine(np.ascontiguousarray(out[..., ch]), M, (W, H), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REFLECT)
    if effects.motion_blur_px * px >= 1.0:
        out = cv2.filter2D(out, -1, _motion_blur_kernel(effects.motion_blur_px * px, effects.motion_blur_angle_deg),
                           borderType=cv2.BORDER_REFLECT)
    if effects.defocus_sigma_px * px > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), effects.defocus_sigma_px * px, borderType=cv2.BORDER_REFLECT)
    if effects.noise_std > 0:
        noise = np.random.default_rng(effects.noise_seed).standard_normal(out.shape, dtype=np.float32)
        out += np.float32(effects.noise_std) * noise
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if effects.jpeg_quality is not None:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(effects.jpeg_quality)])
        if ok:
            out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out


# --------------------------------------------------------------------------------------------
# A whole scene
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SceneSample:
    """Everything needed to render one randomised frame."""

    joint_positions: dict[str, float]  # joint name -> position (radians / metres)
    camera: PinholeCamera  # intrinsics and image size
    T_camera_base: np.ndarray  # (4, 4) base -> camera optical frame, metres
    appearance: SceneAppearance  # lights, colours, room, distractors
    effects: ImageEffects  # post-render image effects


def sample_scene(renderer: "MujocoRenderer", config: DomainConfig, rng: np.random.Generator, *,
                 width: int, height: int, joint_positions: Mapping[str, float] | None = None,
                 bounds: tuple[np.ndarray, float] | None = None) -> SceneSample:
    """Sample one frame's joints, camera, appearance and image effects for ``renderer``'s robot.

    The generator is split into independent children per component, so e.g. a different lighting
    range does not change the joint configurations drawn from the same seed.

    Args:
        joint_positions: use these instead of sampling a configuration.
        bounds: (centre (3,), radius) the camera must frame, instead of the robot at ``joint_positions``
            (e.g. the whole sweep of a trajectory, for a static camera).
    """
    rng_joints, rng_camera, rng_look, rng_effects = rng.spawn(4)
    robot = renderer.robot
    floor_z = renderer.floor_z
    if joint_positions is None:
        q = sample_joint_configuration(robot, rng_joints, margin=config.joint_margin, floor_z=floor_z,
                                       min_link_height=config.min_link_height_m, max_tries=config.max_joint_tries)
    else:
        q = dict(joint_positions)
    center, radius = robot_bounds(robot, q) if bounds is None else bounds
    camera, T_camera_base = sample_camera(config, rng_camera, width=width, height=height, target_center=center,
                                          target_radius=radius, floor_z=floor_z)
    T_base_camera = se3.invert_transform(T_camera_base)
    eye = T_base_camera[:3, 3]
    # The point the optical axis passes through at the target's distance (the jittered look-at point).
    look = eye + T_base_camera[:3, 2] * float(np.linalg.norm(center - eye))
    idx = renderer.scene_index
    appearance = sample_appearance(config, rng_look, base_rgba=renderer.robot_base_rgba, floor_z=floor_z,
                                   target=look, eye=eye, num_light_slots=idx.num_light_slots,
                                   num_distractor_slots=idx.num_distractor_slots, texture_size=idx.texture_size)
    effects = sample_image_effects(config, rng_effects)
    return SceneSample(joint_positions=q, camera=camera, T_camera_base=T_camera_base, appearance=appearance,
                       effects=effects)


def render_scene_sample(renderer: "MujocoRenderer", sample: SceneSample) -> RenderedFrame:
    """Render ``sample`` (appearance, then geometry) and apply its image effects to ``rgb``."""
    renderer.set_appearance(sample.appearance)
    frame = renderer.render(sample.joint_positions, sample.T_camera_base, sample.camera)
    frame.rgb = apply_image_effects(frame.rgb, sample.effects)
    return frame
