"""Synthetic rosbag2 recordings with exact ground truth, written without ROS (through ``rosbags``).

:func:`write_sim_bag` renders a robot moving along a joint trajectory ``q_of_t`` and records what
a real setup would: a colour camera (``sensor_msgs/Image`` rgb8 + ``sensor_msgs/CameraInfo``) and
``sensor_msgs/JointState`` at its own rate, with stamps deliberately *not* aligned to the images.
Beside the bag it writes ``groundtruth.yaml`` (:mod:`ctrnet_ros.sim.groundtruth`): the camera pose
``T_base_camera`` per time segment, so a camera bump is a second segment.

Layout of ``out_dir`` (a rosbag2 directory; ``ros2 bag play out_dir`` works on it)::

    out_dir/metadata.yaml
    out_dir/out_dir_0.mcap        (or .db3 for sqlite3 storage)
    out_dir/groundtruth.yaml

Time: trajectory time ``t`` (seconds) runs from 0 to ``duration_s``; a message at ``t`` has log time
and header stamp ``start_time_ns + round(t * 1e9)``. Images are at ``t = k / camera_hz`` (the first at
``t = 0``, so it is the bag's first message) and each renders ``q_of_t(t)`` at exactly that ``t``.
Joint states are at ``t = joint_stamp_offset_s + m / joint_hz + jitter``. Ground-truth segment times are
seconds since the first message in the bag, the same clock as the stamps.

This module never imports rclpy or ROS message packages: messages are the Kilted typestore's classes.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import numpy as np
from tqdm import tqdm

from ..core.camera import PinholeCamera
from ..core.robot import RobotModel
from ..core import se3
from .frame import Renderer
from .groundtruth import GroundTruth, GroundTruthSegment

__all__ = [
    "DEFAULT_IMAGE_TOPIC",
    "DEFAULT_CAMERA_INFO_TOPIC",
    "DEFAULT_JOINT_STATES_TOPIC",
    "DEFAULT_CAMERA_FRAME",
    "DEFAULT_START_TIME_NS",
    "GROUNDTRUTH_FILENAME",
    "STORAGE_PLUGINS",
    "BagSummary",
    "JointTrajectory",
    "CameraPoseSchedule",
    "ImageEffect",
    "write_sim_bag",
    "rgb_to_image_msg",
    "camera_to_camera_info_msg",
    "make_joint_state_msg",
    "kilted_typestore",
]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_TOPIC = "/camera/color/image_raw"
DEFAULT_CAMERA_INFO_TOPIC = "/camera/color/camera_info"
DEFAULT_JOINT_STATES_TOPIC = "/joint_states"
DEFAULT_CAMERA_FRAME = "camera_color_optical_frame"
#: 2023-11-14T22:13:20Z. A fixed default (not "now") so that the same seed gives the same bag.
DEFAULT_START_TIME_NS = 1_700_000_000_000_000_000
#: Name of the ground-truth file inside the bag directory.
GROUNDTRUTH_FILENAME = "groundtruth.yaml"
#: ``storage`` argument -> rosbags storage plugin name.
STORAGE_PLUGINS = ("mcap", "sqlite3")

_NS_PER_S = 1_000_000_000
_ROSBAG2_VERSION = 9  # metadata version written by Jazzy/Kilted rosbag2
_IMAGE_MSGTYPE = "sensor_msgs/msg/Image"
_CAMERA_INFO_MSGTYPE = "sensor_msgs/msg/CameraInfo"
_JOINT_STATE_MSGTYPE = "sensor_msgs/msg/JointState"
# Order of messages that share a stamp: image, then its camera_info, then joint states.
_KIND_IMAGE, _KIND_JOINTS = 0, 1

#: ``q_of_t(t)``: trajectory time in seconds -> ``{joint name: position}`` (radians / metres).
JointTrajectory = Callable[[float], Mapping[str, float]]
#: A fixed (4, 4) ``T_camera_base``, or ``[(start_s, T_camera_base), ...]`` with the first start 0.
CameraPoseSchedule = Union[np.ndarray, Sequence[tuple[float, np.ndarray]]]
#: ``effect(rgb, rng) -> rgb`` on (H, W, 3) uint8 RGB images (noise, blur, colour shifts...).
ImageEffect = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class BagSummary:
    """What :func:`write_sim_bag` wrote."""

    bag_path: Path  # rosbag2 directory
    groundtruth_path: Path  # bag_path / groundtruth.yaml
    storage: str  # "mcap" or "sqlite3"
    message_counts: dict[str, int]  # topic -> number of messages
    first_stamp_ns: int  # log time of the first message, ns since the epoch
    last_stamp_ns: int  # log time of the last message
    groundtruth: GroundTruth = field(repr=False)  # the contents of groundtruth.yaml

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last message."""
        return (self.last_stamp_ns - self.first_stamp_ns) / _NS_PER_S


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------
def kilted_typestore():
    """The rosbags typestore for ROS 2 Kilted message definitions."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _header(typestore, stamp_ns: int, frame_id: str):
    Time = typestore.types["builtin_interfaces/msg/Time"]
    Header = typestore.types["std_msgs/msg/Header"]
    sec, nanosec = divmod(int(stamp_ns), _NS_PER_S)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def rgb_to_image_msg(typestore, rgb: np.ndarray, stamp_ns: int, frame_id: str):
    """(H, W, 3) uint8 RGB array -> ``sensor_msgs/Image`` (encoding rgb8, step 3W) stamped ``stamp_ns``."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    Image = typestore.types[_IMAGE_MSGTYPE]
    return Image(header=_header(typestore, stamp_ns, frame_id), height=h, width=w, encoding="rgb8",
                 is_bigendian=0, step=3 * w, data=np.ascontiguousarray(rgb).reshape(-1))


def camera_to_camera_info_msg(typestore, camera: PinholeCamera, stamp_ns: int, frame_id: str):
    """:class:`PinholeCamera` -> ``sensor_msgs/CameraInfo``: k = K, d = D, r = I, p = [K | 0], no binning/ROI.

    A camera with no distortion model (``""``) is written as ``plumb_bob`` with five zero coefficients.
    """
    model = camera.distortion_model or "plumb_bob"
    d = np.asarray(camera.D, dtype=np.float64)
    if d.size == 0 and model in ("plumb_bob", "rational_polynomial"):
        d = np.zeros(5 if model == "plumb_bob" else 8)
    P = np.hstack([camera.K, np.zeros((3, 1))])
    CameraInfo = typestore.types[_CAMERA_INFO_MSGTYPE]
    RegionOfInterest = typestore.types["sensor_msgs/msg/RegionOfInterest"]
    return CameraInfo(
        header=_header(typestore, stamp_ns, frame_id), height=camera.height, width=camera.width,
        distortion_model=model, d=d.copy(), k=np.asarray(camera.K, dtype=np.float64).reshape(-1).copy(),
        r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def make_joint_state_msg(typestore, names: Sequence[str], position, velocity, effort, stamp_ns: int,
                         frame_id: str = ""):
    """``sensor_msgs/JointState`` with (J,) position (rad / m), velocity (rad/s / m/s) and effort (N m / N).

    All three arrays must have one entry per name (filled arrays also keep rclpy-written bags readable).
    """
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (position, velocity, effort)]
    if any(a.size != len(names) for a in arrays):
        raise ValueError(f"JointState arrays must have {len(names)} entries, got {[a.size for a in arrays]}")
    JointState = typestore.types[_JOINT_STATE_MSGTYPE]
    return JointState(header=_header(typestore, stamp_ns, frame_id), name=list(names), position=arrays[0],
                      velocity=arrays[1], effort=arrays[2])


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------
def _check_rigid(T, what: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"{what} must be a finite (4, 4) transform, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) <= 0 or not np.allclose(
            T[3], [0, 0, 0, 1]):
        raise ValueError(f"{what} is not a rigid transform (rotation not orthonormal, or bottom row not 0 0 0 1)")
    return T


def _camera_schedule(T_camera_base: CameraPoseSchedule, duration_ns: int) -> list[tuple[int, np.ndarray]]:
    """Normalise the pose argument to ``[(start offset ns, (4, 4) T_camera_base), ...]``, first start 0."""
    try:
        single = np.asarray(T_camera_base, dtype=np.float64)
    except (TypeError, ValueError):  # a ragged list of (start_s, pose) pairs
        single = None
    if single is not None and single.shape == (4, 4):
        return [(0, _check_rigid(single, "T_camera_base"))]
    try:
        entries = [(float(start), pose) for start, pose in T_camera_base]
    except (TypeError, ValueError) as exc:
        raise ValueError("T_camera_base must be a (4, 4) array or a list of (start_s, (4, 4) T_camera_base)") from exc
    if not entries:
        raise ValueError("T_camera_base schedule is empty")
    schedule = []
    for i, (start_s, pose) in enumerate(entries):
        if not math.isfinite(start_s):
            raise ValueError(f"camera segment {i} start must be finite, got {start_s}")
        start_ns = int(round(start_s * _NS_PER_S))
        if i == 0 and start_ns != 0:
            raise ValueError(f"the first camera segment must start at 0 s, got {start_s}")
        if i > 0 and start_ns <= schedule[-1][0]:
            raise ValueError(f"camera segment starts must increase strictly, got {[s for s, _ in entries]}")
        if start_ns >= duration_ns:
            raise ValueError(f"camera segment {i} starts at {start_s} s, at or after the end of the bag")
        schedule.append((start_ns, _check_rigid(pose, f"T_camera_base of camera segment {i}")))
    return schedule


def _image_offsets_ns(duration_ns: int, camera_hz: float) -> np.ndarray:
    """(N,) int64 image times ``round(k / camera_hz)`` in ns for all k with time < duration."""
    n = int(math.ceil(duration_ns / _NS_PER_S * camera_hz)) + 1
    offsets = np.round(np.arange(n) * (_NS_PER_S / camera_hz)).astype(np.int64)
    return offsets[offsets < duration_ns]


def _joint_offsets_ns(duration_ns: int, joint_hz: float, offset_s: float, jitter_s: float,
                      rng: np.random.Generator) -> np.ndarray:
    """(M,) int64 joint-state times in ns: ``offset + m / joint_hz + jitter``, strictly increasing, in [0, duration).

    The jitter is normal with standard deviation ``jitter_s``, clipped to 3 sigma and to 0.4 periods
    (so stamps stay strictly increasing and in order).
    """
    period = 1.0 / joint_hz
    n = int(math.ceil((duration_ns / _NS_PER_S - offset_s) * joint_hz)) + 2
    n = max(n, 0)
    bound = min(3.0 * jitter_s, 0.4 * period)
    jitter = np.clip(rng.normal(0.0, jitter_s, size=n), -bound, bound) if jitter_s > 0 else np.zeros(n)
    t = offset_s + np.arange(n) * period + jitter
    offsets = np.round(t * _NS_PER_S).astype(np.int64)
    offsets = offsets[(offsets >= 0) & (offsets < duration_ns)]
    if offsets.size > 1 and np.any(np.diff(offsets) <= 0):  # guaranteed by the clip; checked, not assumed
        raise AssertionError("joint-state stamps are not strictly increasing")
    return offsets


class _JointSampler:
    """Evaluates ``q_of_t`` for the robot's actuated joints, filling joints it omits with defaults."""

    def __init__(self, robot: RobotModel, q_of_t: JointTrajectory, qd_of_t: JointTrajectory | None,
                 duration_s: float, fd_step_s: float):
        self.names = list(robot.joint_names)
        self._defaults = robot.default_positions()
        self._q_of_t, self._qd_of_t = q_of_t, qd_of_t
        self._duration_s, self._h = duration_s, fd_step_s
        self._warned: set[str] = set()  # kinds ("position", "velocity") already warned about

    def _vector(self, values: Mapping[str, float], t: float, what: str, fill: Mapping[str, float]) -> np.ndarray:
        missing = [n for n in self.names if n not in values]
        if missing and what not in self._warned:
            logger.warning("trajectory gives no %s for joint(s) %s; recording %s for them", what, missing,
                           "their default positions" if what == "position" else "zero")
            self._warned.add(what)
        out = np.array([float(values[n]) if n in values else float(fill[n]) for n in self.names])
        if not np.all(np.isfinite(out)):
            bad = [n for n, v in zip(self.names, out) if not math.isfinite(v)]
            raise ValueError(f"trajectory {what} is not finite at t = {t:.6f} s for joint(s) {bad}")
        return out

    def positions(self, t: float) -> np.ndarray:
        """(J,) positions in :attr:`names` order at trajectory time ``t`` seconds."""
        return self._vector(self._q_of_t(t), t, "position", self._defaults)

    def velocities(self, t: float) -> np.ndarray:
        """(J,) velocities: analytic if ``qd_of_t`` was given, else central differences inside [0, duration]."""
        if self._qd_of_t is not None:
            return self._vector(self._qd_of_t(t), t, "velocity", dict.fromkeys(self.names, 0.0))
        lo, hi = max(t - self._h, 0.0), min(t + self._h, self._duration_s)
        return (self.positions(hi) - self.positions(lo)) / (hi - lo)


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------
def write_sim_bag(
    out_dir: str | os.PathLike,
    *,
    renderer: Renderer,
    robot: RobotModel,
    camera: PinholeCamera,
    T_camera_base: CameraPoseSchedule,
    q_of_t: JointTrajectory,
    duration_s: float,
    qd_of_t: JointTrajectory | None = None,
    camera_hz: float = 30.0,
    joint_hz: float = 100.0,
    start_time_ns: int = DEFAULT_START_TIME_NS,
    joint_stamp_offset_s: float = 0.0037,
    joint_stamp_jitter_s: float = 0.0005,
    image_topic: str = DEFAULT_IMAGE_TOPIC,
    camera_info_topic: str = DEFAULT_CAMERA_INFO_TOPIC,
    joint_states_topic: str = DEFAULT_JOINT_STATES_TOPIC,
    camera_frame: str = DEFAULT_CAMERA_FRAME,
    storage: str = "mcap",
    compress: bool = False,
    image_effects: ImageEffect | None = None,
    seed: int = 0,
    fd_step_s: float = 1e-4,
    progress: bool = True,
) -> BagSummary:
    """Render a robot along ``q_of_t`` and record camera and joint topics to a rosbag2, plus ground truth.

    Args:
        out_dir: rosbag2 directory to create; must not exist yet. ``groundtruth.yaml`` goes inside it.
        renderer: renders ``(joint_positions, T_camera_base, camera)`` to a :class:`RenderedFrame`.
        robot: kinematic model; its actuated joints (``robot.joint_names``, gripper included) are recorded,
            and ``robot.base_link`` is the ground truth's parent frame.
        camera: intrinsics and image size of the rendered images and of CameraInfo.
        T_camera_base: (4, 4) base frame -> camera optical frame, metres; or, for a camera that is bumped,
            ``[(start_s, T_camera_base), ...]`` with starts in trajectory seconds, the first 0.0.
        q_of_t: trajectory time in seconds (0 to ``duration_s``) -> ``{joint: position}`` (rad / m).
            Joints it omits take the robot's default positions (with one warning).
        duration_s: length of the recording in seconds; messages lie in ``[0, duration_s)``.
        qd_of_t: optional analytic velocities (rad/s, m/s), e.g. ``traj.velocity`` of a
            :class:`~ctrnet_ros.sim.randomize.SmoothJointTrajectory`; default: central differences of
            ``q_of_t`` with step ``fd_step_s`` (one-sided at the ends of ``[0, duration_s]``).
        camera_hz, joint_hz: message rates, Hz.
        start_time_ns: log time (ns since the epoch) of trajectory time 0 = the first image.
        joint_stamp_offset_s: joint-state stamps lag the image grid by this much (>= 0), seconds.
        joint_stamp_jitter_s: standard deviation of the normal jitter on joint-state stamps, seconds
            (clipped to 3 sigma and 0.4 periods).
        image_topic, camera_info_topic, joint_states_topic: topic names.
        camera_frame: ``frame_id`` of Image and CameraInfo, and the ground truth's child frame.
        storage: ``"mcap"`` or ``"sqlite3"``.
        compress: zstd chunk compression (mcap only; ``ros2 bag`` reads it). Uncompressed 640x480 rgb8
            at 30 Hz is 28 MB/s; a neutral MuJoCo scene compressed 40x (measured), noisy images far less.
        image_effects: optional ``(rgb, rng) -> rgb`` applied to each rendered (H, W, 3) uint8 image.
        seed: seeds the stamp jitter and the ``image_effects`` rng (independent streams).
        fd_step_s: finite-difference step for velocities, seconds.
        progress: show a tqdm progress bar.
    Returns:
        :class:`BagSummary` with per-topic counts, first/last stamps and paths.
    Raises:
        FileExistsError: ``out_dir`` exists. ValueError: bad rates, poses, trajectory values or renderer output.

    Effort is recorded as zeros. The renderer is responsible for rendering with ``camera``'s distortion;
    CameraInfo describes ``camera`` as given.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; write_sim_bag creates a new bag directory and never overwrites")
    if storage not in STORAGE_PLUGINS:
        raise ValueError(f"storage must be one of {STORAGE_PLUGINS}, got {storage!r}")
    if compress and storage != "mcap":
        raise ValueError("compress=True needs storage='mcap' (zstd chunk compression)")
    for name, value in (("duration_s", duration_s), ("camera_hz", camera_hz), ("joint_hz", joint_hz),
                        ("fd_step_s", fd_step_s)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    if not (math.isfinite(joint_stamp_offset_s) and joint_stamp_offset_s >= 0):
        raise ValueError(f"joint_stamp_offset_s must be >= 0, got {joint_stamp_offset_s}")
    if not (math.isfinite(joint_stamp_jitter_s) and joint_stamp_jitter_s >= 0):
        raise ValueError(f"joint_stamp_jitter_s must be >= 0, got {joint_stamp_jitter_s}")
    if int(start_time_ns) < 0:
        raise ValueError(f"start_time_ns must be >= 0, got {start_time_ns}")
    if len({image_topic, camera_info_topic, joint_states_topic}) != 3:
        raise ValueError("image, camera_info and joint_states topics must be distinct")
    start_time_ns = int(start_time_ns)
    duration_ns = int(round(duration_s * _NS_PER_S))

    schedule = _camera_schedule(T_camera_base, duration_ns)
    jitter_rng, effects_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    image_offsets = _image_offsets_ns(duration_ns, camera_hz)
    joint_offsets = _joint_offsets_ns(duration_ns, joint_hz, joint_stamp_offset_s, joint_stamp_jitter_s,
                                      jitter_rng)
    if image_offsets.size == 0:
        raise ValueError(f"duration {duration_s} s at {camera_hz} Hz gives no images")
    events = sorted([(int(o), _KIND_IMAGE) for o in image_offsets] + [(int(o), _KIND_JOINTS) for o in joint_offsets])
    first_stamp_ns = start_time_ns + events[0][0]
    last_stamp_ns = start_time_ns + events[-1][0]

    # Ground truth: T_base_camera per segment, times relative to the bag's first message.
    starts_rel = [(start_time_ns + s - first_stamp_ns) / _NS_PER_S for s, _ in schedule]
    starts_rel[0] = 0.0  # the first segment covers the bag from its first message
    ends_rel = starts_rel[1:] + [math.inf]
    groundtruth = GroundTruth(
        parent_frame=robot.base_link, child_frame=camera_frame,
        segments=tuple(GroundTruthSegment.from_transform(a, b, se3.invert_transform(T))
                       for a, b, (_, T) in zip(starts_rel, ends_rel, schedule)),
    )

    sampler = _JointSampler(robot, q_of_t, qd_of_t, duration_s, fd_step_s)
    typestore = kilted_typestore()
    schedule_starts = np.array([s for s, _ in schedule])
    counts = {image_topic: 0, camera_info_topic: 0, joint_states_topic: 0}

    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    logger.info("writing %s: %.2f s, %d images at %g Hz (%dx%d), %d joint states at %g Hz, %d camera segment(s)",
                out_dir, duration_s, image_offsets.size, camera_hz, camera.width, camera.height,
                joint_offsets.size, joint_hz, len(schedule))
    writer = Writer(out_dir, version=_ROSBAG2_VERSION, storage_plugin=plugin)
    if compress:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        writer.set_custom_data("ctrnet_ros.groundtruth", GROUNDTRUTH_FILENAME)
        writer.set_custom_data("ctrnet_ros.seed", str(seed))
        image_conn = writer.add_connection(image_topic, _IMAGE_MSGTYPE, typestore=typestore)
        info_conn = writer.add_connection(camera_info_topic, _CAMERA_INFO_MSGTYPE, typestore=typestore)
        joint_conn = writer.add_connection(joint_states_topic, _JOINT_STATE_MSGTYPE, typestore=typestore)
        zeros = np.zeros(len(sampler.names))
        for offset_ns, kind in tqdm(events, desc=f"bag {out_dir.name}", unit="msg", disable=not progress):
            stamp_ns = start_time_ns + offset_ns
            t = offset_ns / _NS_PER_S
            if kind == _KIND_JOINTS:
                msg = make_joint_state_msg(typestore, sampler.names, sampler.positions(t), sampler.velocities(t),
                                           zeros, stamp_ns)
                writer.write(joint_conn, stamp_ns, typestore.serialize_cdr(msg, _JOINT_STATE_MSGTYPE))
                counts[joint_states_topic] += 1
                continue
            T = schedule[int(np.searchsorted(schedule_starts, offset_ns, side="right")) - 1][1]
            q = dict(zip(sampler.names, sampler.positions(t).tolist()))
            rgb = renderer.render(q, T, camera).rgb
            if image_effects is not None:
                rgb = image_effects(rgb, effects_rng)
            rgb = np.asarray(rgb)
            if rgb.shape != (camera.height, camera.width, 3) or rgb.dtype != np.uint8:
                raise ValueError(f"image at t = {t:.6f} s is {rgb.shape} {rgb.dtype}; expected "
                                 f"({camera.height}, {camera.width}, 3) uint8 (renderer or image_effects output)")
            image = rgb_to_image_msg(typestore, rgb, stamp_ns, camera_frame)
            writer.write(image_conn, stamp_ns, typestore.serialize_cdr(image, _IMAGE_MSGTYPE))
            info = camera_to_camera_info_msg(typestore, camera, stamp_ns, camera_frame)
            writer.write(info_conn, stamp_ns, typestore.serialize_cdr(info, _CAMERA_INFO_MSGTYPE))
            counts[image_topic] += 1
            counts[camera_info_topic] += 1

    groundtruth_path = groundtruth.save(out_dir / GROUNDTRUTH_FILENAME)
    logger.info("wrote %s (%s) and %s", out_dir, ", ".join(f"{k}: {v}" for k, v in counts.items()),
                groundtruth_path.name)
    return BagSummary(bag_path=out_dir, groundtruth_path=groundtruth_path, storage=storage, message_counts=counts,
                      first_stamp_ns=first_stamp_ns, last_stamp_ns=last_stamp_ns, groundtruth=groundtruth)
