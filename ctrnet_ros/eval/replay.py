"""Replay a rosbag through the node's own calibration pipeline and compare every frame with ground truth.

There is no second implementation here: frames go through :class:`~ctrnet_ros.core.pipeline.ReplayScheduler`
into :class:`~ctrnet_ros.core.pipeline.CalibrationPipeline`, the object that owns the joint-state
history, the :class:`~ctrnet_ros.core.estimator.CameraToRobotEstimator` and the fusion. Images and
joint states are decoded by the node's own field decoders (:mod:`ctrnet_ros.core.msgfields`) and
stamped with their *header* stamps, exactly as the node stamps them. This module only reads the bag,
feeds it in log-time order, and records what came out.

Time axis of the ground truth: a frame's ``t_rel`` is its *log time* minus the log time of the first
message in the bag (any topic), in seconds, the clock that ``groundtruth.yaml`` segments use. For the
synthetic bags log time and header stamp are equal; for real recordings the log clock is the one a
person sees in a bag viewer when writing down when the camera was bumped.

Errors: bad input raises an :class:`EvalError` subclass whose message names the problem (and, for a
missing topic, lists what the bag has). Nothing else is raised for bad input.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..core import se3
from ..core.camera import CameraModelError, PinholeCamera
from ..core.estimator import CameraToRobotEstimator, EstimatorSetupError, KeypointDetector
from ..core.pipeline import MODES, CalibrationPipeline, FrameResult, PipelineConfig, ReplayScheduler
from ..core.robot import KeypointSpec, RobotModel, RobotModelError
from ..sim.bag import (DEFAULT_CAMERA_INFO_TOPIC, DEFAULT_IMAGE_TOPIC, DEFAULT_JOINT_STATES_TOPIC,
                       GROUNDTRUTH_FILENAME)
from ..sim.groundtruth import GroundTruth, GroundTruthError
from .bagio import (CAMERA_INFO_MSGTYPE, IMAGE_MSGTYPES, JOINT_STATE_MSGTYPE, BagInfo, BagReadError,
                    ImageEncodingError, bag_info, camera_info_msg_to_camera, joint_state_msg_to_positions,
                    read_bag_messages, stamp_to_ns)
from .metrics import add_distances

__all__ = [
    "EvalError",
    "BagError",
    "GroundTruthInputError",
    "GroundTruthMismatchError",
    "ModelError",
    "FrameRecord",
    "SegmentSpan",
    "EvalResult",
    "evaluate_bag",
    "default_groundtruth_path",
    "default_model_path",
    "IMAGE_MSGTYPES",
    "CAMERA_INFO_MSGTYPE",
    "JOINT_STATE_MSGTYPE",
]

logger = logging.getLogger(__name__)

#: overlay samples are kept at most this wide (pixels), to bound memory on large images
_SAMPLE_MAX_WIDTH = 480
_NS_PER_S = 1_000_000_000


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class EvalError(Exception):
    """Bad input to an evaluation; the message says what is wrong (the CLI prints it and exits 2)."""


class BagError(EvalError):
    """The bag cannot be read, is corrupt, or lacks a topic the evaluation needs."""


class GroundTruthInputError(EvalError):
    """The ground-truth file cannot be read or is malformed."""


class GroundTruthMismatchError(EvalError):
    """The ground truth does not describe this bag (other frames, or no frame inside its segments)."""


class ModelError(EvalError):
    """The keypoint model is missing, corrupt, or does not fit the robot's keypoint spec."""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class FrameRecord:
    """One image of the bag: what the pipeline made of it, and how that compares with ground truth.

    Poses are ``T_camera_base`` (base frame -> camera optical frame), metres. Errors are NaN when
    there is nothing to compare (no estimate, or the frame lies in a gap of the ground truth).
    """

    index: int  # 0-based, in image arrival (log-time) order
    stamp_ns: int  # header stamp: what the pipeline used
    log_ns: int  # log time in the bag
    t_rel: float  # seconds since the bag's first message (log time): the ground truth's clock
    segment: int | None  # index of the ground-truth segment t_rel falls in, None in a gap
    ok: bool  # the per-frame estimate is usable
    reason: str | None  # why not (estimate reason tag, or "image_decode")
    detail: str
    latency_ms: float  # estimator time (FK + letterbox + inference + PnP), NaN if the detector never ran
    timings_ms: dict[str, float]
    rmse_px: float  # PnP RMS reprojection error of the per-frame estimate (camera px), NaN if no PnP
    num_inliers: int
    T_camera_base: np.ndarray | None  # (4, 4) per-frame estimate (only when ok)
    T_camera_base_fused: np.ndarray | None  # (4, 4) what the node would publish after this frame
    source: str  # "fused", "filtered", "saved" or "none"
    keypoints_uv: np.ndarray | None  # (K, 2) detected keypoints, camera px
    confidence: np.ndarray | None  # (K,)
    keypoints_base: np.ndarray | None  # (K, 3) FK keypoints at the image stamp, base frame, metres
    keypoints_uv_gt: np.ndarray | None  # (K, 2) keypoints_base projected through the ground-truth pose, px
    trans_err_m: float = math.nan  # |camera position (base frame) estimated - true|, per-frame estimate
    rot_err_deg: float = math.nan  # geodesic angle between estimated and true rotation
    add_m: float = math.nan  # ADD of the per-frame estimate; inf for a failed frame with ground truth
    fused_trans_err_m: float = math.nan  # same errors for T_camera_base_fused
    fused_rot_err_deg: float = math.nan
    fusion_num_frames: int = 0  # static mode: diverse frames in the fusion window
    fusion_converged: bool = False
    fusion_bumped: bool = False  # the fusion detected a camera bump at this frame
    fusion_segment: int = 0  # the fusion's own segment counter (increments at each detected bump)
    fusion_trans_std_m: float = math.nan  # 1-sigma camera-position uncertainty the fusion reports
    fusion_refined: bool = False  # the fused pose is the outline-refined one

    @property
    def reprojection_errors_px(self) -> np.ndarray:
        """(K,) |detected - ground-truth projection| in camera pixels (NaN where either is missing)."""
        if self.keypoints_uv is None or self.keypoints_uv_gt is None:
            return np.zeros(0)
        return np.linalg.norm(self.keypoints_uv - self.keypoints_uv_gt, axis=1)


@dataclass(frozen=True)
class SegmentSpan:
    """A ground-truth segment clipped to the bag: ``[start_s, end_s)`` since the bag's first message."""

    index: int
    start_s: float
    end_s: float  # finite: clipped to the last message of the bag


@dataclass
class EvalResult:
    """Everything :func:`evaluate_bag` recorded; :mod:`ctrnet_ros.eval.report` turns it into metrics and plots."""

    bag: Path
    groundtruth: GroundTruth
    segments: list[SegmentSpan]  # ground-truth segments that overlap the bag
    frames: list[FrameRecord]
    mode: str  # pipeline mode: "static" or "moving"
    robot: str  # keypoint spec name (e.g. "panda")
    model: str  # model file, or a description of an injected detector
    image_topic: str
    image_msgtype: str
    camera_info_topic: str
    joint_states_topic: str
    camera: PinholeCamera | None  # the last camera model received
    min_confidence: float  # keypoints below this were not used by the estimator
    bag_start_ns: int
    bag_duration_s: float
    wall_s: float  # seconds the replay took
    samples: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)
    # ^ frame index -> (RGB image, scale applied to it) kept for overlay figures
    warnings: list[str] = field(default_factory=list)  # non-fatal problems met while reading

    @property
    def reasons(self) -> Counter:
        """Failure reason -> number of frames."""
        return Counter(f.reason for f in self.frames if not f.ok)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def default_groundtruth_path(bag: str | os.PathLike) -> Path:
    """``BAG/groundtruth.yaml`` (where :func:`~ctrnet_ros.sim.bag.write_sim_bag` puts it)."""
    bag = Path(bag)
    return (bag if bag.is_dir() else bag.parent) / GROUNDTRUTH_FILENAME


def _model_search_paths(robot: str) -> list[Path]:
    name = f"models/{robot}_ctrnet.onnx"
    paths = []
    try:
        from ament_index_python.packages import get_package_share_directory

        paths.append(Path(get_package_share_directory("ctrnet_ros")) / name)
    except Exception:  # noqa: BLE001 - no ROS, or the package is not in the ament index
        pass
    paths.append(Path(__file__).resolve().parents[2] / name)  # source checkout / editable install
    paths.append(Path(sys.prefix) / "share" / "ctrnet_ros" / name)  # pip install of the data_files
    return paths


def default_model_path(robot: str = "panda") -> Path:
    """The shipped ``models/<robot>_ctrnet.onnx``: ament share dir, then the source tree, then ``sys.prefix``.

    Raises:
        ModelError: not found in any of them (the message lists where it looked).
    """
    paths = _model_search_paths(robot)
    for p in paths:
        if p.is_file():
            return p
    raise ModelError(f"no model given and the shipped model {robot}_ctrnet.onnx was not found (looked in "
                     f"{', '.join(str(p) for p in paths)}); pass --model PATH")


def _load_groundtruth(groundtruth: GroundTruth | str | os.PathLike | None, bag: Path) -> GroundTruth:
    if isinstance(groundtruth, GroundTruth):
        return groundtruth
    path = default_groundtruth_path(bag) if groundtruth is None else Path(groundtruth)
    if not path.is_file():
        raise GroundTruthInputError(f"ground truth {path} does not exist" +
                                    (" (the default beside the bag); pass --ground-truth" if groundtruth is None
                                     else ""))
    try:
        return GroundTruth.load(path)
    except GroundTruthError as exc:
        raise GroundTruthInputError(f"bad ground truth: {exc}") from exc


def _load_robot(robot: str | KeypointSpec, robot_model: RobotModel | None) -> tuple[KeypointSpec, RobotModel]:
    try:
        if isinstance(robot, KeypointSpec):
            spec = robot
        elif robot.endswith((".yaml", ".yml")) or os.path.sep in robot:
            spec = KeypointSpec.from_yaml(robot)
        else:
            spec = KeypointSpec.builtin(robot)
        model = robot_model if robot_model is not None else RobotModel.from_spec(spec)
    except (RobotModelError, OSError) as exc:
        raise EvalError(f"robot {robot!r}: {exc}") from exc
    return spec, model


def _check_topics(info: BagInfo, image_topic: str, camera_info_topic: str, joint_states_topic: str) -> str:
    """Validate topics and types; returns the image message type."""

    def like(msgtypes) -> str:
        alts = [t for t, m in info.topics.items() if m in msgtypes]
        return f"; topics of that type in the bag: {', '.join(sorted(alts))}" if alts else ""

    if camera_info_topic not in info.topics or info.message_counts.get(camera_info_topic, 0) == 0:
        what = "no messages on" if camera_info_topic in info.topics else "no"
        raise BagError(f"bag {info.path} has {what} camera_info topic {camera_info_topic!r}: without the camera "
                       f"intrinsics nothing can be estimated{like({CAMERA_INFO_MSGTYPE})}. The bag has: "
                       f"{info.describe_topics()}")
    for topic, types, what in ((image_topic, set(IMAGE_MSGTYPES), "image"),
                               (joint_states_topic, {JOINT_STATE_MSGTYPE}, "joint states")):
        if topic not in info.topics:
            raise BagError(f"bag {info.path} has no {what} topic {topic!r}{like(types)}. The bag has: "
                           f"{info.describe_topics()}")
        if info.topics[topic] not in types:
            raise BagError(f"{what} topic {topic!r} carries {info.topics[topic]}, expected "
                           f"{' or '.join(sorted(types))}{like(types)}")
        if info.message_counts.get(topic, 0) == 0:
            raise BagError(f"{what} topic {topic!r} of bag {info.path} has no messages")
    if info.topics[camera_info_topic] != CAMERA_INFO_MSGTYPE:
        raise BagError(f"camera_info topic {camera_info_topic!r} carries {info.topics[camera_info_topic]}, "
                       f"expected {CAMERA_INFO_MSGTYPE}{like({CAMERA_INFO_MSGTYPE})}")
    return info.topics[image_topic]


def _first_image_frame_id(bag: Path, image_topic: str) -> str:
    for _, _, msg in read_bag_messages(bag, [image_topic]):
        return str(msg.header.frame_id)
    return ""


def _describe_detector(detector: Any) -> str:
    path = getattr(detector, "path", None)
    return str(path) if path is not None else f"injected {type(detector).__name__}"


# --------------------------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------------------------
def evaluate_bag(
    bag: str | os.PathLike,
    groundtruth: GroundTruth | str | os.PathLike | None = None,
    *,
    detector: KeypointDetector | None = None,
    model: str | os.PathLike | None = None,
    backend: str = "auto",
    device: str = "cpu",
    threads: int = 0,
    robot: str | KeypointSpec = "panda",
    robot_model: RobotModel | None = None,
    image_topic: str = DEFAULT_IMAGE_TOPIC,
    camera_info_topic: str = DEFAULT_CAMERA_INFO_TOPIC,
    joint_states_topic: str = DEFAULT_JOINT_STATES_TOPIC,
    mode: str = "static",
    config: PipelineConfig | None = None,
    max_joint_wait_s: float = 0.1,
    num_samples: int = 6,
    silhouette: bool = True,
    progress: bool = True,
) -> EvalResult:
    """Replay ``bag`` through the node's :class:`CalibrationPipeline` and compare each frame with ground truth.

    Args:
        bag: rosbag2 directory (mcap or sqlite3 storage) or a single ``.mcap`` file.
        groundtruth: a :class:`GroundTruth`, a path to its YAML, or None for ``BAG/groundtruth.yaml``.
        detector: a keypoint detector object to use (tests, custom backends); overrides ``model``.
        model: model file (``.onnx``/``.pt``) loaded with :func:`ctrnet_ros.inference.load_detector`;
            None (and no ``detector``): the shipped ``models/<robot>_ctrnet.onnx``.
        backend, device: passed to ``load_detector``.
        threads: inference threads when loading ``model`` (0: the backend's default, all cores): ONNX
            Runtime intra-op threads, or ``torch.set_num_threads`` (process-wide) for the torch backend.
        robot: built-in keypoint config name (``config/robots/<robot>.yaml``), a path to one, or a spec.
        robot_model: an already loaded :class:`RobotModel` for the spec (saves URDF parsing).
        image_topic: ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (detected from the bag).
        camera_info_topic, joint_states_topic: the other inputs the node subscribes to.
        mode: pipeline mode, ``"static"`` (fused) or ``"moving"`` (filtered per-frame); ignored if ``config``.
        config: full pipeline configuration (default: the node's defaults with ``mode``).
        max_joint_wait_s: how long (recorded time) an image waits for joint states after its stamp,
            the node's bounded wait.
        num_samples: frames whose images are kept for the overlay figure.
        silhouette: static mode: refine the fused pose with the robot's outline, as the node does
            (needs a model with a mask head and the robot's visual meshes; off otherwise).
        progress: show a tqdm progress bar (on stderr).
    Returns:
        :class:`EvalResult` with one :class:`FrameRecord` per image message.
    Raises:
        EvalError: (subclasses) unreadable/corrupt bag, missing topic or camera_info, ground truth that
            is malformed or does not describe this bag, missing/corrupt/mismatched model.
    """
    t_start = time.perf_counter()
    bag = Path(bag)
    if config is None:
        if mode not in MODES:
            raise EvalError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        config = PipelineConfig(mode=mode)

    # -- validate everything cheap before loading a model ------------------------------------------
    try:
        info = bag_info(bag)
    except BagReadError as exc:
        raise BagError(str(exc)) from exc
    image_msgtype = _check_topics(info, image_topic, camera_info_topic, joint_states_topic)
    gt = _load_groundtruth(groundtruth, bag)
    spec, robot_model = _load_robot(robot, robot_model)
    if gt.parent_frame != spec.base_link:
        raise GroundTruthMismatchError(
            f"ground truth is relative to frame {gt.parent_frame!r} but robot {spec.robot!r} has base link "
            f"{spec.base_link!r}: the ground truth is for another robot or another base frame")
    try:
        frame_id = _first_image_frame_id(bag, image_topic)
    except BagReadError as exc:
        raise BagError(str(exc)) from exc
    if frame_id != gt.child_frame:
        raise GroundTruthMismatchError(
            f"ground truth is the pose of frame {gt.child_frame!r} but the images on {image_topic} are in frame "
            f"{frame_id!r}: the ground truth is for another camera (or another frame of it)")
    segments = _segment_spans(gt, info)
    if not segments:
        raise GroundTruthMismatchError(
            f"no ground-truth segment overlaps the bag (0 to {(info.end_ns - info.start_ns) / 1e9:.2f} s since its "
            f"first message); segments: {[(s.start, s.end) for s in gt.segments]}")

    # -- model --------------------------------------------------------------------------------------
    if detector is None:
        from ..inference import ModelLoadError, load_detector

        model_path = Path(model) if model is not None else default_model_path(spec.robot)
        try:
            detector = load_detector(model_path, backend=backend, device=device, intra_op_threads=threads)
        except ModelLoadError as exc:
            raise ModelError(str(exc)) from exc
        model_label = str(model_path)
        if threads and hasattr(detector, "net"):  # torch backend: no per-model thread setting
            import torch

            torch.set_num_threads(threads)
    else:
        model_label = _describe_detector(detector)
    try:
        estimator = CameraToRobotEstimator(detector=detector, robot=robot_model, spec=spec,
                                           config=config.estimator)
    except EstimatorSetupError as exc:
        raise ModelError(f"model {model_label} does not fit robot {spec.robot!r}: {exc}") from exc
    mesh = None
    if silhouette and config.mode == "static" and config.silhouette.enabled and getattr(detector, "has_mask", False):
        from ..sim.scene import load_silhouette_mesh  # trimesh: only when meshes are needed

        try:
            mesh = load_silhouette_mesh(robot_model, max_faces=config.silhouette.mesh_faces)
        except (OSError, ValueError) as exc:
            logger.warning("outline refinement off: cannot load the robot's meshes (%s)", exc)
    pipeline = CalibrationPipeline(estimator, config, silhouette_mesh=mesh)
    scheduler = ReplayScheduler(pipeline, max_wait_s=max_joint_wait_s)

    # -- replay ----------------------------------------------------------------------------------
    recorder = _Recorder(gt, info, pipeline, num_images=info.message_counts[image_topic], num_samples=num_samples)
    decode = IMAGE_MSGTYPES[image_msgtype]
    warned: set[str] = set()

    def warn_once(key: str, message: str) -> None:
        if key not in warned:
            warned.add(key)
            logger.warning("%s", message)
            recorder.warnings.append(message)

    bar = tqdm(total=info.message_counts[image_topic], desc=f"eval {bag.name}", unit="frame", disable=not progress,
               dynamic_ncols=True)
    try:
        for topic, log_ns, msg in read_bag_messages(bag, [image_topic, camera_info_topic, joint_states_topic]):
            if topic == camera_info_topic:
                try:
                    camera = camera_info_msg_to_camera(msg)
                except CameraModelError as exc:
                    warn_once("camera_info", f"unusable camera_info at {log_ns} ns, ignored: {exc}")
                    continue
                if scheduler.camera_info(camera) and recorder.camera is not None:
                    logger.info("camera intrinsics changed at t = %.3f s: fusion restarts",
                                (log_ns - info.start_ns) / 1e9)
                recorder.camera = camera
            elif topic == joint_states_topic:
                try:
                    positions = joint_state_msg_to_positions(msg)
                except ValueError as exc:
                    warn_once("joint_states", f"malformed JointState at {log_ns} ns, ignored: {exc}")
                    continue
                recorder.add(scheduler.joint_state(stamp_to_ns(msg.header.stamp), list(positions),
                                                   list(positions.values())))
            else:
                stamp = stamp_to_ns(msg.header.stamp)
                if str(msg.header.frame_id) != gt.child_frame:
                    warn_once("frame_id", f"image at {log_ns} ns is in frame {msg.header.frame_id!r}, not "
                                          f"{gt.child_frame!r}; compared with the ground truth anyway")
                try:
                    rgb = decode(msg)
                except ImageEncodingError as exc:
                    recorder.undecodable(stamp, log_ns, str(exc))
                    bar.update(1)
                    continue
                recorder.image_arrived(stamp, log_ns, rgb)
                recorder.add(scheduler.image(rgb, stamp))
                bar.update(1)
                bar.set_postfix_str(f"ok {recorder.num_ok}", refresh=False)
        recorder.add(scheduler.flush())
    except BagReadError as exc:
        raise BagError(str(exc)) from exc
    finally:
        bar.close()

    frames = sorted(recorder.frames, key=lambda f: f.index)
    return EvalResult(
        bag=bag, groundtruth=gt, segments=segments, frames=frames, mode=config.mode, robot=spec.robot,
        model=model_label, image_topic=image_topic, image_msgtype=image_msgtype,
        camera_info_topic=camera_info_topic, joint_states_topic=joint_states_topic, camera=recorder.camera,
        min_confidence=config.estimator.min_confidence, bag_start_ns=info.start_ns,
        bag_duration_s=(info.end_ns - info.start_ns) / 1e9, wall_s=time.perf_counter() - t_start,
        samples=recorder.chosen_samples(), warnings=recorder.warnings)


def _segment_spans(gt: GroundTruth, info: BagInfo) -> list[SegmentSpan]:
    end = (info.end_ns - info.start_ns) / _NS_PER_S
    spans = []
    for i, s in enumerate(gt.segments):
        if s.start <= end and s.end > 0.0:
            spans.append(SegmentSpan(index=i, start_s=max(s.start, 0.0), end_s=min(s.end, end)))
    return spans


class _Recorder:
    """Turns :class:`FrameResult` s into :class:`FrameRecord` s (ground-truth comparison) as they come out."""

    def __init__(self, gt: GroundTruth, info: BagInfo, pipeline: CalibrationPipeline, *, num_images: int,
                 num_samples: int):
        self.gt = gt
        self.start_ns = info.start_ns
        self.pipeline = pipeline
        self.camera: PinholeCamera | None = None
        self.frames: list[FrameRecord] = []
        self.warnings: list[str] = []
        self.num_ok = 0
        self._arrived = 0
        self._pending: dict[int, deque] = {}  # stamp -> deque of (index, log_ns) awaiting their result
        # Keep twice as many candidate images as needed, evenly spread; pick those with estimates at the end.
        n_cand = min(num_images, 2 * num_samples)
        self._num_samples = num_samples
        self._candidates = set(np.round(np.linspace(0, num_images - 1, n_cand)).astype(int).tolist()) \
            if n_cand > 0 else set()
        self._images: dict[int, tuple[np.ndarray, float]] = {}
        self._seg_T_camera_base = [se3.invert_transform(s.T_parent_child) for s in gt.segments]

    def image_arrived(self, stamp_ns: int, log_ns: int, rgb: np.ndarray) -> None:
        index = self._arrived
        self._arrived += 1
        self._pending.setdefault(stamp_ns, deque()).append((index, log_ns))
        if index in self._candidates:
            scale = min(1.0, _SAMPLE_MAX_WIDTH / rgb.shape[1])
            small = rgb if scale == 1.0 else cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                                                        interpolation=cv2.INTER_AREA)
            self._images[index] = (np.ascontiguousarray(small), scale)

    def undecodable(self, stamp_ns: int, log_ns: int, detail: str) -> None:
        index = self._arrived
        self._arrived += 1
        t_rel, seg = self._when(log_ns)
        self.frames.append(FrameRecord(
            index=index, stamp_ns=stamp_ns, log_ns=log_ns, t_rel=t_rel, segment=seg, ok=False, reason="image_decode",
            detail=detail, latency_ms=math.nan, timings_ms={}, rmse_px=math.nan, num_inliers=0, T_camera_base=None,
            T_camera_base_fused=None, source="none", keypoints_uv=None, confidence=None, keypoints_base=None,
            keypoints_uv_gt=None, add_m=math.inf if seg is not None else math.nan))

    def _when(self, log_ns: int) -> tuple[float, int | None]:
        t_rel = (log_ns - self.start_ns) / _NS_PER_S
        seg = self.gt.segment_at(t_rel)
        return t_rel, (None if seg is None else self.gt.segments.index(seg))

    def add(self, results: list[FrameResult]) -> None:
        for r in results:
            self.frames.append(self._record(r))

    def _record(self, r: FrameResult) -> FrameRecord:
        index, log_ns = self._pending[r.stamp_ns].popleft()
        if not self._pending[r.stamp_ns]:
            del self._pending[r.stamp_ns]
        est = r.estimate
        t_rel, seg = self._when(log_ns)
        fusion = r.fusion
        rec = FrameRecord(
            index=index, stamp_ns=r.stamp_ns, log_ns=log_ns, t_rel=t_rel, segment=seg, ok=bool(est.ok),
            reason=est.reason, detail=est.detail,
            latency_ms=float(sum(est.timings_ms.values())) if est.timings_ms else math.nan,
            timings_ms=dict(est.timings_ms), rmse_px=float(est.rmse_px),
            num_inliers=int(est.pnp.num_inliers) if est.pnp is not None else 0,
            T_camera_base=None if est.T_camera_base is None else np.array(est.T_camera_base),
            T_camera_base_fused=None if r.T_camera_base is None else np.array(r.T_camera_base), source=r.source,
            keypoints_uv=est.keypoints_uv, confidence=est.confidence, keypoints_base=est.keypoints_base,
            keypoints_uv_gt=None,
            fusion_num_frames=fusion.num_frames if fusion else 0, fusion_converged=bool(fusion and fusion.converged),
            fusion_bumped=bool(fusion and fusion.bumped), fusion_segment=fusion.segment if fusion else 0,
            fusion_trans_std_m=fusion.trans_std_m if fusion and fusion.T_camera_base is not None else math.nan,
            fusion_refined=bool(fusion and fusion.refined))
        if est.ok:
            self.num_ok += 1
        if seg is not None:
            T_gt = self._seg_T_camera_base[seg]
            camera = self.pipeline.camera
            if est.keypoints_base is not None and camera is not None:
                rec.keypoints_uv_gt = camera.project_from(T_gt, est.keypoints_base)
            if est.ok:
                rec.trans_err_m = _position_error(est.T_camera_base, T_gt)
                rec.rot_err_deg = se3.rotation_error_deg(est.T_camera_base, T_gt)
                rec.add_m = float(add_distances(est.T_camera_base, T_gt, est.keypoints_base))
            else:
                rec.add_m = math.inf  # frames without an estimate count as failures
            if r.T_camera_base is not None:
                rec.fused_trans_err_m = _position_error(r.T_camera_base, T_gt)
                rec.fused_rot_err_deg = se3.rotation_error_deg(r.T_camera_base, T_gt)
        return rec

    def chosen_samples(self) -> dict[int, tuple[np.ndarray, float]]:
        """Up to ``num_samples`` of the kept images, preferring frames with an estimate, spread in time."""
        by_index = {f.index: f for f in self.frames}
        cands = sorted(self._images)
        ok = [i for i in cands if i in by_index and by_index[i].ok]
        rest = [i for i in cands if i not in ok]

        def spread(items: list[int], n: int) -> list[int]:
            if n <= 0 or not items:
                return []
            return sorted({items[int(i)] for i in np.round(np.linspace(0, len(items) - 1, min(n, len(items))))})

        ok = spread(ok, self._num_samples)
        pick = ok + spread(rest, self._num_samples - len(ok))
        return {i: self._images[i] for i in sorted(pick)}


def _position_error(T_camera_base_est: np.ndarray, T_camera_base_gt: np.ndarray) -> float:
    """Distance between estimated and true camera positions in the base frame (translations of T_base_camera), m."""
    return se3.translation_error(se3.invert_transform(T_camera_base_est), se3.invert_transform(T_camera_base_gt))
