"""The collector node's parameters: one table, read into a frozen :class:`CollectorNodeConfig`.

Like the calibration node's (:mod:`.parameters`): every parameter has a descriptor with a description
and, for numbers, a range; :func:`declare_and_read_collector` reports every problem at once. All of
them are read-only: the collector is reconfigured by restarting it, which continues the collection.
``config/collect.yaml`` lists every parameter with its default; a test keeps the two in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..collect.dataset import DEFAULT_MAX_SAMPLES, DEFAULT_QUOTA_BYTES
from ..collect.selection import CollectorConfig
from ..core.timesync import JointHistoryConfig
from .parameters import (BACKENDS, ParameterValidationError, ParamSpec, declare_parameter_table,
                         default_camera_info_topic, image_subscription_topic, input_topic_problems,
                         joint_history_config, split_providers)

__all__ = ["COLLECTOR_PARAMETERS", "CollectorNodeConfig", "declare_and_read_collector"]

_C, _J = CollectorConfig(), JointHistoryConfig()


def _p(name, default, description, **kw) -> ParamSpec:
    return ParamSpec(name, default, description, read_only=True, **kw)


#: Every parameter of the collector node, in the order of ``config/collect.yaml``.
COLLECTOR_PARAMETERS: tuple[ParamSpec, ...] = (
    # -- output -------------------------------------------------------------------------------------
    _p("output_directory", "", "Collection folder (created if missing; an existing collection is continued). "
                               "Required."),
    _p("max_samples", DEFAULT_MAX_SAMPLES, "Stop saving once the collection holds this many samples.",
       range=(1, 10_000_000)),
    _p("quota_mb", DEFAULT_QUOTA_BYTES / 1024 ** 2, "Disk quota for the collection's images (MiB); saving "
       "stops with a warning when the next image would exceed it.", range=(1.0, 1e9)),
    _p("start_paused", False, "Start paused (call ~/resume to begin saving)."),
    # -- selection ----------------------------------------------------------------------------------
    _p("min_joint_distance", _C.min_joint_distance, "Save only frames at least this far (rad, L2 over the "
       "keypoints' joints) in joint space from every saved sample.", range=(0.0, 100.0)),
    _p("min_sharpness", _C.min_sharpness, "Minimum variance of the Laplacian of the grey image (measured at "
       "sharpness_width); below: blurred.", range=(0.0, 1e6)),
    _p("sharpness_width", _C.sharpness_width, "Wider images are downscaled to this width before measuring "
       "sharpness (0: native size).", range=(0, 100000)),
    _p("max_rate_hz", _C.max_rate_hz, "At most this many saves per second of image-stamp time (0: unlimited).",
       range=(0.0, 1000.0)),
    # -- model (optional: the robot-in-view check) --------------------------------------------------
    _p("model", "", "Keypoint model (ONNX or torch checkpoint) for the robot-in-view check. Empty: no model, "
                    "frames are judged by joints and sharpness alone."),
    _p("backend", "auto", "Inference backend: auto (by file type), onnxruntime or torch.", choices=BACKENDS),
    _p("device", "cpu", "Device: cpu, cuda or cuda:N."),
    _p("providers", "", "onnxruntime execution providers, comma-separated (empty: automatic)."),
    _p("min_confidence", _C.min_confidence, "With a model: the median keypoint confidence must reach this.",
       range=(0.0, 1.0)),
    _p("min_mask_fraction", _C.min_mask_fraction, "With a model that predicts a mask: the robot must cover more "
       "than this fraction of the image.", range=(0.0, 1.0)),
    # -- robot --------------------------------------------------------------------------------------
    _p("robot", "panda", "Robot keypoint config: a built-in name (config/robots/<name>.yaml) or a path to one. "
                         "Its keypoints' joints must be known at each image stamp."),
    _p("robot_description", "", "URDF XML of the robot. Empty: the keypoint config's default URDF."),
    _p("base_frame", "", "Robot base frame recorded with the collection. Empty: the keypoint config's base link."),
    # -- topics -------------------------------------------------------------------------------------
    _p("image_topic", "/camera/color/image_raw", "sensor_msgs/Image topic of the colour camera (raw image)."),
    _p("camera_info_topic", "", "sensor_msgs/CameraInfo topic. Empty: camera_info beside the image topic."),
    _p("joint_states_topic", "/joint_states", "sensor_msgs/JointState topic."),
    _p("compressed", False, "Subscribe to sensor_msgs/CompressedImage on <image_topic>/compressed instead."),
    # -- joint states -------------------------------------------------------------------------------
    _p("max_joint_extrapolation_s", _J.max_extrapolation_s, "An image newer than the newest joint sample by more "
       "than this (seconds) is rejected as stale.", range=(0.0, 1.0)),
    _p("joint_wait_s", 0.05, "Wait up to this long (seconds) for joint states to pass an image's stamp.",
       range=(0.0, 1.0)),
    _p("max_joint_gap_s", _J.max_gap_s, "Never interpolate joints across a gap longer than this (seconds).",
       range=(0.001, 10.0)),
    _p("joint_history_s", _J.history_s, "Joint-state history kept (seconds).", range=(0.1, 60.0)),
    _p("diagnostics_period_s", 1.0, "Period of /diagnostics messages (seconds, steady clock).", range=(0.05, 60.0)),
)


@dataclass(frozen=True)
class CollectorNodeConfig:
    """Validated parameter values (see :data:`COLLECTOR_PARAMETERS`)."""

    output_directory: str
    max_samples: int
    quota_bytes: int
    start_paused: bool
    selection: CollectorConfig
    model: str
    backend: str
    device: str
    providers: tuple[str, ...]
    robot: str
    robot_description: str
    base_frame: str  # may be empty: the keypoint spec's base link
    image_topic: str
    camera_info_topic: str  # resolved (never empty)
    joint_states_topic: str
    compressed: bool
    joint_history: JointHistoryConfig
    joint_wait_s: float
    diagnostics_period_s: float

    @property
    def subscribed_image_topic(self) -> str:
        return image_subscription_topic(self.image_topic, self.compressed)


def declare_and_read_collector(node) -> CollectorNodeConfig:
    """Declare :data:`COLLECTOR_PARAMETERS` on ``node`` and return the validated values.

    Raises:
        ParameterValidationError: listing every problem found.
    """
    v = declare_parameter_table(node, COLLECTOR_PARAMETERS)
    problems: list[str] = []
    out = v["output_directory"]
    if not out.strip():
        problems.append("output_directory: not set; give the collection folder, e.g. -p output_directory:=/data/"
                        "collect_cam1")
    elif os.path.exists(out) and not os.path.isdir(out):
        problems.append(f"output_directory: {out!r} exists and is not a folder")
    if v["model"] and not os.path.isfile(v["model"]):
        problems.append(f"model: file {v['model']!r} does not exist (working directory {os.getcwd()})")
    problems += input_topic_problems(v)
    if v["base_frame"].startswith("/"):
        problems.append(f"base_frame: TF frame ids must not start with '/' (got {v['base_frame']!r})")
    if problems:
        raise ParameterValidationError(problems)
    selection = CollectorConfig(
        min_joint_distance=v["min_joint_distance"], min_sharpness=v["min_sharpness"],
        sharpness_width=v["sharpness_width"], min_confidence=v["min_confidence"],
        min_mask_fraction=v["min_mask_fraction"], max_rate_hz=v["max_rate_hz"])
    return CollectorNodeConfig(
        output_directory=out, max_samples=v["max_samples"], quota_bytes=int(v["quota_mb"] * 1024 ** 2),
        start_paused=v["start_paused"], selection=selection, model=v["model"], backend=v["backend"],
        device=v["device"], providers=split_providers(v["providers"]),
        robot=v["robot"], robot_description=v["robot_description"], base_frame=v["base_frame"],
        image_topic=v["image_topic"],
        camera_info_topic=v["camera_info_topic"] or default_camera_info_topic(v["image_topic"]),
        joint_states_topic=v["joint_states_topic"], compressed=v["compressed"], joint_history=joint_history_config(v),
        joint_wait_s=v["joint_wait_s"], diagnostics_period_s=v["diagnostics_period_s"])
