"""The calibration node's parameters: one table of declarations, read into a frozen :class:`NodeConfig`.

Every parameter gets a :class:`~rcl_interfaces.msg.ParameterDescriptor` with a description and, for
numbers, a range (rclpy then refuses out-of-range values itself). :func:`declare_and_read` declares
them all, collects *every* problem (wrong type, out of range, unknown choice, inconsistent
combination, missing file) and raises one :class:`ParameterValidationError` that lists them, so a
misconfigured launch fails at start-up with a message that says what to change.

Only the model parameters (``model``, ``backend``, ``device``, ``providers``) may change at run time
(the node reloads the model, keeping the old one if the new one fails); all others are read-only.
``config/ctrnet.yaml`` lists every parameter with its default; a test keeps the two in step.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterException)

from ..core.fusion import FusionConfig, MovingFilterConfig
from ..core.silhouette import SilhouetteRefineConfig
from ..core.timesync import JointHistoryConfig

__all__ = ["ParamSpec", "PARAMETERS", "RUNTIME_PARAMETERS", "NodeConfig", "ParameterValidationError",
           "declare_and_read", "declare_parameter_table", "default_camera_info_topic", "image_subscription_topic",
           "input_topic_problems", "joint_history_config", "split_providers", "MODES", "BACKENDS"]

MODES = ("static", "moving")
BACKENDS = ("auto", "onnxruntime", "torch")
#: parameters that may be changed while the node runs (they trigger a model reload)
RUNTIME_PARAMETERS = ("model", "backend", "device", "providers")


class ParameterValidationError(ValueError):
    """One or more parameters are invalid; the message lists each problem on its own line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid parameters:\n  - " + "\n  - ".join(self.problems))


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any  # also fixes the type: str, bool, int or float
    description: str
    range: tuple[float, float] | None = None  # inclusive bounds for numbers
    choices: tuple[str, ...] | None = None  # allowed values for strings
    read_only: bool | None = None  # None: read-only unless named in RUNTIME_PARAMETERS (the calibration node's)

    def descriptor(self) -> ParameterDescriptor:
        read_only = self.name not in RUNTIME_PARAMETERS if self.read_only is None else self.read_only
        d = ParameterDescriptor(name=self.name, description=self.description, read_only=read_only)
        if self.range is not None:
            lo, hi = self.range
            if isinstance(self.default, bool):
                raise TypeError(f"{self.name}: a bool parameter has no range")
            if isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        return d


_F, _M, _O = FusionConfig(), MovingFilterConfig(), SilhouetteRefineConfig()
_J = JointHistoryConfig()

#: Every parameter of the node, in the order of ``config/ctrnet.yaml``.
PARAMETERS: tuple[ParamSpec, ...] = (
    # -- model ----------------------------------------------------------------------------------
    ParamSpec("model", "", "Keypoint model: an ONNX file or a torch checkpoint (path). Required. Changing it at "
                           "run time reloads the model; the previous one is kept if loading fails."),
    ParamSpec("backend", "auto", "Inference backend: auto (by file type), onnxruntime or torch.", choices=BACKENDS),
    ParamSpec("device", "cpu", "Device: cpu, cuda or cuda:N (torch device; onnxruntime picks CUDA/TensorRT "
                               "providers for cuda)."),
    ParamSpec("providers", "", "onnxruntime execution providers, comma-separated, in priority order (empty: "
                               "automatic, TensorRT -> CUDA -> CPU as available)."),
    ParamSpec("inference_threads", 0, "CPU threads of the network (onnxruntime intra-op pool, or torch's threads); "
                                      "0: the backend's default, one per core.", range=(0, 64)),
    ParamSpec("inference_spin_wait", False, "onnxruntime only: idle network threads spin between tasks "
              "(onnxruntime's own default). false: they sleep, which leaves the cores to the node's other threads "
              "and to the camera driver; on a 2-core host that processed more frames (bench/bench_node.py "
              "--spin-wait on off)."),
    # -- robot ----------------------------------------------------------------------------------
    ParamSpec("robot", "panda", "Robot keypoint config: a built-in name (config/robots/<name>.yaml) or a path "
                                "to such a YAML file."),
    ParamSpec("robot_description", "", "URDF XML of the robot. Empty: use the latched /robot_description topic "
                                       "(robot_state_publisher), else the keypoint config's default URDF."),
    # -- topics ---------------------------------------------------------------------------------
    ParamSpec("image_topic", "/camera/color/image_raw", "sensor_msgs/Image topic of the colour camera (raw, "
                                                        "distorted image)."),
    ParamSpec("camera_info_topic", "", "sensor_msgs/CameraInfo topic. Empty: camera_info beside the image topic "
                                       "(image_transport convention)."),
    ParamSpec("joint_states_topic", "/joint_states", "sensor_msgs/JointState topic."),
    ParamSpec("compressed", False, "Subscribe to sensor_msgs/CompressedImage on <image_topic>/compressed instead "
                                   "of the raw image."),
    # -- frames and TF --------------------------------------------------------------------------
    ParamSpec("base_frame", "", "TF parent frame: the robot base. Empty: the keypoint config's base link."),
    ParamSpec("camera_frame", "", "TF child frame: the camera optical frame. Empty: the image's header.frame_id."),
    ParamSpec("publish_inverse", False, "Publish camera_frame -> base_frame instead of base_frame -> camera_frame "
                                        "(for TF trees where the camera already has a parent)."),
    ParamSpec("mode", "static", "static: a fixed camera, frames are fused into one calibration. moving: a camera "
                                "that moves relative to the base (e.g. on a mobile base), per-frame estimates "
                                "are gated and smoothed.", choices=MODES),
    ParamSpec("static_when_converged", True, "In static mode, publish on /tf_static once converged (and stop "
                                             "publishing on /tf); otherwise always on /tf."),
    ParamSpec("tf_static_update_m", 0.0005, "Once on /tf_static, re-send when the fused translation moved by more "
                                            "than this (metres).", range=(0.0, 1.0)),
    ParamSpec("tf_static_update_deg", 0.05, "...or the fused rotation by more than this (degrees).",
              range=(0.0, 180.0)),
    # -- joint states ---------------------------------------------------------------------------
    ParamSpec("max_joint_extrapolation_s", _J.max_extrapolation_s, "An image newer than the newest joint sample "
              "by more than this (seconds) is rejected as stale.", range=(0.0, 1.0)),
    ParamSpec("joint_wait_s", 0.05, "When an image is newer than the newest joint sample, wait up to this long "
              "(seconds) for joint states to catch up before judging them stale (they travel separately).",
              range=(0.0, 1.0)),
    ParamSpec("overlap_inference", True, "Run the network while the frame's joint states are still arriving "
              "(lower latency); false: only once they cover the image stamp."),
    ParamSpec("pipelined", False, "Two worker threads: the network runs on the next frame while this frame's "
              "geometry (forward kinematics, PnP, fusion, publication) runs; more frames processed at the same "
              "latency. Implies overlap_inference. False: one worker does both, frame after frame."),
    ParamSpec("executor_threads", 1, "Threads spinning the node's callbacks (1: rclpy's SingleThreadedExecutor, "
              "the fastest on a small CPU; more: a MultiThreadedExecutor, so a slow ~/save or ~/reload never delays "
              "incoming joint states). Per-frame work always runs on the node's own worker thread.", range=(1, 8)),
    ParamSpec("max_joint_gap_s", _J.max_gap_s, "Never interpolate joint positions across a gap between samples "
              "longer than this (seconds).", range=(0.001, 10.0)),
    ParamSpec("joint_history_s", _J.history_s, "Joint-state history kept (seconds): how late an image may arrive.",
              range=(0.1, 60.0)),
    # -- per-frame estimate ---------------------------------------------------------------------
    ParamSpec("min_confidence", 0.3, "Keypoints below this confidence count as not detected.", range=(0.0, 1.0)),
    ParamSpec("max_rmse_px", 8.0, "Frames whose PnP RMS reprojection error exceeds this (pixels) are rejected.",
              range=(0.01, 1000.0)),
    # -- calibration files ----------------------------------------------------------------------
    ParamSpec("calibration_file", "", "A calibration YAML written by ~/save, loaded at start-up as the starting "
                                      "calibration (published until new frames are fused). Empty: none."),
    ParamSpec("save_directory", "", "Folder where ~/save writes ctrnet_calibration.yaml and "
                                    "ctrnet_static_tf.launch.py (created if missing). Empty: ~/save refuses."),
    ParamSpec("diagnostics_period_s", 1.0, "Period of /diagnostics messages (seconds, steady clock).",
              range=(0.05, 60.0)),
    # -- static-camera fusion -------------------------------------------------------------------
    ParamSpec("fusion.max_frames", _F.max_frames, "Diverse frames kept in the fusion window.", range=(3, 100000)),
    ParamSpec("fusion.min_frames", _F.min_frames, "Distinct joint configurations (fusion.min_joint_distance apart) "
              "needed before a fused pose is published, and spanned by a bump's disagreeing frames.",
              range=(1, 1000)),
    ParamSpec("fusion.min_joint_distance", _F.min_joint_distance, "A frame closer than this in joint space (rad, L2) "
              "to a fused one is a near-duplicate and is not added.", range=(0.0, 100.0)),
    ParamSpec("fusion.converged_trans_std_m", _F.converged_trans_std_m, "Converged when the 1-sigma translation "
              "uncertainty is below this (metres)...", range=(0.0, 10.0)),
    ParamSpec("fusion.converged_rot_std_deg", _F.converged_rot_std_deg, "...and the 1-sigma rotation uncertainty "
              "is below this (degrees)...", range=(0.0, 180.0)),
    ParamSpec("fusion.converged_min_frames", _F.converged_min_frames, "...and at least this many diverse frames "
              "are fused.", range=(1, 100000)),
    ParamSpec("fusion.bump_threshold_px", _F.bump_threshold_px, "RMS reprojection error of a new frame under the "
              "fused pose that counts as disagreement (pixels).", range=(0.1, 10000.0)),
    ParamSpec("fusion.bump_frames", _F.bump_frames, "Consecutive disagreeing frames that mean the camera moved "
              "(the fusion then restarts from them).", range=(1, 10000)),
    ParamSpec("fusion.frame_quality_px", _F.frame_quality_px, "A frame's own RMS error must be below this (pixels) "
              "for it to vote for a bump.", range=(0.01, 1000.0)),
    # -- static camera: outline refinement -------------------------------------------------------
    ParamSpec("outline.enabled", _O.enabled, "Refine the fused pose by fitting the robot's outline (its URDF "
              "visual meshes at each frame's joint positions) to the model's robot masks of many frames. Needs a "
              "model with a mask head and loadable meshes; off otherwise (said in /diagnostics)."),
    ParamSpec("outline.background", True, "Run the outline fit in a low-priority process (frames keep flowing); "
              "false: in the worker, between frames."),
    ParamSpec("outline.max_frames", _O.max_frames, "Frames whose masks are kept for the fit (the oldest leaves).",
              range=(1, 1000)),
    ParamSpec("outline.min_frames", _O.min_frames, "Frames needed for the first outline fit.", range=(1, 1000)),
    ParamSpec("outline.growth", _O.growth, "While the window fills, fit again once the kept frames have grown by "
              "this factor since the last fit (2: at 10, 20, 40, 80 frames); each fit costs time in proportion to "
              "its frames.", range=(1.0, 100.0)),
    ParamSpec("outline.every_frames", _O.every_frames, "Fit again after this many new frames (once the window is "
              "full, or sooner than growth asks).", range=(1, 100000)),
    ParamSpec("outline.fit_width", _O.fit_width, "Width (pixels) of the undistorted image the outlines are compared "
              "in.", range=(32, 4096)),
    ParamSpec("outline.mask_threshold", _O.mask_threshold, "Mask probability taken as the robot's outline (above "
              "0.5 moves the measured outline inwards). 0.5 suits a calibrated mask; see "
              "docs/results/outline_threshold.md before changing it.", range=(0.01, 0.99)),
    ParamSpec("outline.mesh_faces", _O.mesh_faces, "The visual meshes are decimated to about this many triangles.",
              range=(100, 1000000)),
    ParamSpec("outline.max_correction_m", _O.max_correction_m, "An outline fit that moves the camera farther than "
              "this from the keypoint pose (metres)...", range=(0.0, 10.0)),
    ParamSpec("outline.max_correction_deg", _O.max_correction_deg, "...or rotates it more than this (degrees) is "
              "refused.", range=(0.0, 180.0)),
    ParamSpec("outline.keypoint_prior_m", _O.keypoint_prior_m, "The keypoint-fused pose enters the outline fit as a "
              "prior with this 1-sigma camera position (metres)...; 0 (either): no prior.", range=(0.0, 10.0)),
    ParamSpec("outline.keypoint_prior_deg", _O.keypoint_prior_deg, "...and this 1-sigma rotation (degrees).",
              range=(0.0, 180.0)),
    # -- moving-camera filter -------------------------------------------------------------------
    ParamSpec("moving.alpha", _M.alpha, "Exponential smoothing weight of the newest estimate (1: no smoothing).",
              range=(0.01, 1.0)),
    ParamSpec("moving.max_jump_m", _M.max_jump_m, "A jump larger than this (metres)...", range=(0.0, 100.0)),
    ParamSpec("moving.max_jump_deg", _M.max_jump_deg, "...or this (degrees) is accepted only when confirmed...",
              range=(0.0, 180.0)),
    ParamSpec("moving.confirm_frames", _M.confirm_frames, "...by this many consecutive consistent frames.",
              range=(1, 1000)),
)


def default_camera_info_topic(image_topic: str) -> str:
    """``/ns/image_raw`` -> ``/ns/camera_info`` (image_transport's convention)."""
    head = image_topic.rstrip("/").rpartition("/")[0]
    return f"{head}/camera_info" if head else "camera_info"


def image_subscription_topic(image_topic: str, compressed: bool) -> str:
    """The topic a node subscribes to: ``<image_topic>/compressed`` when ``compressed`` (image_transport's
    convention), else ``image_topic``."""
    return image_topic.rstrip("/") + "/compressed" if compressed else image_topic


# The collector node reads the parameters it shares with this node through the helpers below too, so
# that a camera, joint-state and model set-up means the same to both.
def input_topic_problems(values: dict[str, Any]) -> list[str]:
    """Problems with the ``image_topic`` and ``joint_states_topic`` parameter values (empty: none)."""
    return [f"{name}: must not be empty" for name in ("image_topic", "joint_states_topic") if not values[name].strip()]


def joint_history_config(values: dict[str, Any]) -> JointHistoryConfig:
    """``max_joint_extrapolation_s``, ``max_joint_gap_s`` and ``joint_history_s`` (seconds) -> the history's config."""
    return JointHistoryConfig(max_extrapolation_s=values["max_joint_extrapolation_s"],
                              max_gap_s=values["max_joint_gap_s"], history_s=values["joint_history_s"])


def split_providers(providers: str) -> tuple[str, ...]:
    """The ``providers`` parameter, ``"A, B"`` -> ``("A", "B")`` (empty: automatic)."""
    return tuple(p.strip() for p in providers.split(",") if p.strip())


@dataclass(frozen=True)
class NodeConfig:
    """Validated parameter values (see :data:`PARAMETERS` for the meaning of each)."""

    model: str
    backend: str
    device: str
    providers: tuple[str, ...]
    inference_threads: int
    inference_spin_wait: bool
    robot: str
    robot_description: str
    image_topic: str
    camera_info_topic: str  # resolved (never empty)
    joint_states_topic: str
    compressed: bool
    base_frame: str  # may be empty: the keypoint spec's base link
    camera_frame: str  # may be empty: the image's frame_id
    publish_inverse: bool
    mode: str
    static_when_converged: bool
    tf_static_update_m: float
    tf_static_update_deg: float
    joint_history: JointHistoryConfig
    joint_wait_s: float
    overlap_inference: bool
    pipelined: bool
    executor_threads: int
    min_confidence: float
    max_rmse_px: float
    calibration_file: str
    save_directory: str
    diagnostics_period_s: float
    fusion: FusionConfig = field(default_factory=FusionConfig)
    moving: MovingFilterConfig = field(default_factory=MovingFilterConfig)
    outline: SilhouetteRefineConfig = field(default_factory=SilhouetteRefineConfig)
    outline_background: bool = True

    @property
    def subscribed_image_topic(self) -> str:
        return image_subscription_topic(self.image_topic, self.compressed)


def _type_hint(spec: ParamSpec) -> str:
    if isinstance(spec.default, bool):
        return "true or false"
    if isinstance(spec.default, int):
        return "an integer"
    if isinstance(spec.default, float):
        return "a floating-point number (write whole values with a decimal point, e.g. 1.0 rather than 1)"
    return "a string"


def declare_parameter_table(node, specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Declare every parameter of ``specs`` on ``node``; ``{name: value}`` once each has the right type,
    lies in its range, is one of its choices and is finite.

    Raises:
        ParameterValidationError: listing every such problem.
    """
    problems: list[str] = []
    values: dict[str, Any] = {}
    for spec in specs:
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except InvalidParameterTypeException as exc:
            problems.append(f"{spec.name}: must be {_type_hint(spec)} ({str(exc).rsplit(':', 1)[0]})")
        except InvalidParameterValueException as exc:
            lo, hi = spec.range if spec.range else (None, None)
            problems.append(f"{spec.name}: out of range [{lo}, {hi}] ({exc})")
        except ParameterException as exc:
            problems.append(f"{spec.name}: {exc}")
    for spec in specs:
        v = values.get(spec.name)
        if spec.choices and v is not None and v not in spec.choices:
            problems.append(f"{spec.name}: {v!r} is not one of {', '.join(spec.choices)}")
        if isinstance(v, float) and not math.isfinite(v):
            problems.append(f"{spec.name}: must be finite, got {v}")
    if problems:
        raise ParameterValidationError(problems)
    return values


def declare_and_read(node, *, model_required: bool = True) -> NodeConfig:
    """Declare every parameter of :data:`PARAMETERS` on ``node`` and return the validated values.

    Args:
        node: an ``rclpy.node.Node`` (parameter overrides from the command line or launch apply).
        model_required: False when a detector is injected (tests): ``model`` may then be empty.
    Raises:
        ParameterValidationError: listing every problem found.
    """
    v = declare_parameter_table(node, PARAMETERS)
    problems: list[str] = []
    # -- consistency and files ------------------------------------------------------------------
    if model_required and not v["model"]:
        problems.append("model: not set; give the keypoint model file, e.g. -p model:=models/panda_ctrnet.onnx")
    elif v["model"] and not os.path.isfile(v["model"]):
        problems.append(f"model: file {v['model']!r} does not exist (working directory {os.getcwd()})")
    if v["calibration_file"] and not os.path.isfile(v["calibration_file"]):
        problems.append(f"calibration_file: file {v['calibration_file']!r} does not exist")
    if v["save_directory"] and os.path.exists(v["save_directory"]) and not os.path.isdir(v["save_directory"]):
        problems.append(f"save_directory: {v['save_directory']!r} exists and is not a folder")
    problems += input_topic_problems(v)
    if v["base_frame"] and v["base_frame"] == v["camera_frame"]:
        problems.append(f"base_frame and camera_frame are both {v['base_frame']!r}")
    for name in ("base_frame", "camera_frame"):
        if v[name].startswith("/"):
            problems.append(f"{name}: TF frame ids must not start with '/' (got {v[name]!r})")
    if v["fusion.converged_min_frames"] < v["fusion.min_frames"]:
        problems.append(f"fusion.converged_min_frames ({v['fusion.converged_min_frames']}) must be >= "
                        f"fusion.min_frames ({v['fusion.min_frames']})")
    if v["fusion.max_frames"] < v["fusion.converged_min_frames"]:
        problems.append(f"fusion.max_frames ({v['fusion.max_frames']}) must be >= fusion.converged_min_frames "
                        f"({v['fusion.converged_min_frames']}), or the fusion can never converge")
    if v["outline.min_frames"] > v["outline.max_frames"]:
        problems.append(f"outline.min_frames ({v['outline.min_frames']}) must be <= outline.max_frames "
                        f"({v['outline.max_frames']})")
    if problems:
        raise ParameterValidationError(problems)

    fusion = FusionConfig(
        max_frames=v["fusion.max_frames"], min_frames=v["fusion.min_frames"],
        min_joint_distance=v["fusion.min_joint_distance"], converged_trans_std_m=v["fusion.converged_trans_std_m"],
        converged_rot_std_deg=v["fusion.converged_rot_std_deg"],
        converged_min_frames=v["fusion.converged_min_frames"], bump_threshold_px=v["fusion.bump_threshold_px"],
        bump_frames=v["fusion.bump_frames"], frame_quality_px=v["fusion.frame_quality_px"])
    moving = MovingFilterConfig(max_rmse_px=v["max_rmse_px"], max_jump_m=v["moving.max_jump_m"],
                                max_jump_deg=v["moving.max_jump_deg"], confirm_frames=v["moving.confirm_frames"],
                                alpha=v["moving.alpha"])
    return NodeConfig(
        model=v["model"], backend=v["backend"], device=v["device"],
        providers=split_providers(v["providers"]), inference_threads=v["inference_threads"],
        inference_spin_wait=v["inference_spin_wait"],
        robot=v["robot"], robot_description=v["robot_description"], image_topic=v["image_topic"],
        camera_info_topic=v["camera_info_topic"] or default_camera_info_topic(v["image_topic"]),
        joint_states_topic=v["joint_states_topic"], compressed=v["compressed"], base_frame=v["base_frame"],
        camera_frame=v["camera_frame"], publish_inverse=v["publish_inverse"], mode=v["mode"],
        static_when_converged=v["static_when_converged"], tf_static_update_m=v["tf_static_update_m"],
        tf_static_update_deg=v["tf_static_update_deg"], joint_history=joint_history_config(v),
        joint_wait_s=v["joint_wait_s"],
        overlap_inference=v["overlap_inference"],
        pipelined=v["pipelined"], executor_threads=v["executor_threads"],
        min_confidence=v["min_confidence"],
        max_rmse_px=v["max_rmse_px"], calibration_file=v["calibration_file"], save_directory=v["save_directory"],
        diagnostics_period_s=v["diagnostics_period_s"], fusion=fusion, moving=moving,
        outline=SilhouetteRefineConfig(
            enabled=v["outline.enabled"], max_frames=v["outline.max_frames"], min_frames=v["outline.min_frames"],
            growth=v["outline.growth"], every_frames=v["outline.every_frames"], fit_width=v["outline.fit_width"],
            mesh_faces=v["outline.mesh_faces"], mask_threshold=v["outline.mask_threshold"],
            max_correction_m=v["outline.max_correction_m"],
            max_correction_deg=v["outline.max_correction_deg"], keypoint_prior_m=v["outline.keypoint_prior_m"],
            keypoint_prior_deg=v["outline.keypoint_prior_deg"]),
        outline_background=v["outline.background"])
