"""One frame in, one camera-to-robot estimate out: keypoint detector -> forward kinematics -> robust PnP.

``CameraToRobotEstimator`` is the single implementation used by the ROS node, by ``ctrnet-eval``
replay and by the demo; fusion (:mod:`~ctrnet_ros.core.fusion`) runs on its output.

It never raises for bad *data*: an unusable frame gives an :class:`Estimate` with ``ok=False`` and a
short ``reason`` tag plus a human-readable ``detail`` (for diagnostics). It raises only for a bad
*set-up* (a detector whose keypoints do not match the robot's keypoint spec).

The detector works in its own input resolution; the estimator letterboxes the camera image into
it and maps keypoints back with the same :class:`~ctrnet_ros.core.camera.ImageTransform`, so the
pixel-centre convention is kept end to end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import numpy as np

from .camera import ImageTransform, PinholeCamera
from .pnp import PnPConfig, PnPError, PnPResult, solve_pnp
from .robot import InvalidJointValueError, KeypointSpec, MissingJointError, RobotModel, RobotModelError

__all__ = ["Detection", "KeypointDetector", "EstimatorConfig", "Estimate", "CameraToRobotEstimator",
           "EstimatorSetupError", "PreparedDetection"]


class EstimatorSetupError(ValueError):
    """The estimator's parts do not fit together (e.g. model keypoints vs robot keypoint spec)."""


@dataclass
class Detection:
    """Detector output for one image, in the detector's *input* pixel frame."""

    keypoints_uv: np.ndarray  # (K, 2) pixels, OpenCV convention
    confidence: np.ndarray  # (K,) in [0, 1]
    mask: np.ndarray | None = None  # (h, w) robot probability, any resolution covering the input image


class KeypointDetector(Protocol):
    """A keypoint model behind any inference backend (see :mod:`ctrnet_ros.inference`)."""

    keypoint_names: Sequence[str]  # in output order; must equal the robot keypoint spec's names
    input_size: tuple[int, int]  # (width, height) the model expects

    def detect(self, image_rgb: np.ndarray) -> Detection:
        """(input_height, input_width, 3) uint8 RGB -> :class:`Detection`."""
        ...


@dataclass(frozen=True)
class EstimatorConfig:
    min_confidence: float = 0.3  # keypoints below this confidence are treated as not detected
    max_rmse_px: float = 8.0  # frames whose PnP RMS reprojection error exceeds this are rejected (camera pixels)
    pnp: PnPConfig = field(default_factory=PnPConfig)  # robust PnP settings


@dataclass
class Estimate:
    """Result of :meth:`CameraToRobotEstimator.estimate` for one frame."""

    stamp_ns: int
    ok: bool  # True: ``T_camera_base`` is usable evidence
    reason: str | None = None  # tag when not ok: camera_mismatch, bad_image, joint_states, robot_not_visible, pnp_*, poor_fit
    detail: str = ""  # human-readable explanation
    T_camera_base: np.ndarray | None = None  # (4, 4) base -> camera optical frame
    pnp: PnPResult | None = None
    keypoints_uv: np.ndarray | None = None  # (K, 2) detected keypoints, camera-image pixels
    confidence: np.ndarray | None = None  # (K,)
    keypoints_base: np.ndarray | None = None  # (K, 3) metres, from forward kinematics at the image stamp
    mask: np.ndarray | None = None  # (h, w) robot probability in the detector's input frame, if the model has one
    input_transform: ImageTransform | None = None  # camera image -> detector input
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def rmse_px(self) -> float:
        return self.pnp.rmse_px if self.pnp is not None else float("nan")


@dataclass(frozen=True)
class PreparedDetection:
    """The network's part of a frame, run ahead of the joint states (see :meth:`CameraToRobotEstimator.detect`)."""

    camera: PinholeCamera  # the camera it was computed for
    image_shape: tuple[int, ...]  # shape of the image it was computed from
    input_transform: ImageTransform  # camera image -> detector input
    detection: Detection  # in the detector's input frame
    inference_ms: float


class CameraToRobotEstimator:
    """Per-frame camera pose from an RGB image, the camera model and joint positions at the image stamp."""

    def __init__(self, *, detector: KeypointDetector, robot: RobotModel, spec: KeypointSpec,
                 config: EstimatorConfig = EstimatorConfig()):
        if list(detector.keypoint_names) != spec.names:
            raise EstimatorSetupError(f"model keypoints {list(detector.keypoint_names)} do not match the robot "
                                      f"keypoint spec {spec.names} (same names, same order)")
        if spec.base_link != robot.base_link:
            raise EstimatorSetupError(f"robot model base {robot.base_link!r} != keypoint spec base {spec.base_link!r}")
        self.detector = detector
        self.robot = robot
        self.spec = spec
        self.config = config
        #: joints the keypoints depend on: a joint state must provide these
        self.required_joints: list[str] = robot.required_joints(spec.links)

    def keypoints_base(self, joint_positions: Mapping[str, float]) -> np.ndarray:
        """(K, 3) keypoints in the base frame at ``joint_positions`` (raises RobotModelError)."""
        return self.robot.keypoints_base(self.spec, joint_positions)

    def detect(self, image_rgb: np.ndarray, camera: PinholeCamera) -> PreparedDetection | None:
        """Run only the network on a frame, e.g. while its joint states are still in flight.

        Returns None for an image :meth:`estimate` would refuse anyway (it then says why). Pass the
        result to :meth:`estimate` as ``prepared`` with the same image and camera.
        """
        img = np.asarray(image_rgb)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or \
                (img.shape[1], img.shape[0]) != (camera.width, camera.height):
            return None
        t0 = time.perf_counter()
        tf = camera.letterbox_transform(*self.detector.input_size)
        det = self.detector.detect(tf.apply_image(img))
        return PreparedDetection(camera=camera, image_shape=img.shape, input_transform=tf, detection=det,
                                 inference_ms=(time.perf_counter() - t0) * 1e3)

    def estimate(self, image_rgb: np.ndarray, camera: PinholeCamera, joint_positions: Mapping[str, float] | None,
                 *, stamp_ns: int = 0, joint_problem: str = "",
                 prepared: PreparedDetection | None = None) -> Estimate:
        """Estimate ``T_camera_base`` for one frame.

        Args:
            image_rgb: (H, W, 3) uint8 RGB, the raw (distorted) camera image.
            camera: its intrinsics; its size must equal the image's.
            joint_positions: joint name -> position at the image stamp, or None if unavailable.
            stamp_ns: image stamp (carried into the result).
            joint_problem: why ``joint_positions`` is None or partial (e.g. "stale: ..."), for the diagnostic.
            prepared: this frame's :meth:`detect` result, run earlier (its time counts as inference).
        """
        t0 = time.perf_counter()
        est = Estimate(stamp_ns=stamp_ns, ok=False)
        img = np.asarray(image_rgb)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            est.reason, est.detail = "bad_image", f"expected (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}"
            return est
        if (img.shape[1], img.shape[0]) != (camera.width, camera.height):
            est.reason = "camera_mismatch"
            est.detail = (f"image is {img.shape[1]}x{img.shape[0]} but camera_info says "
                          f"{camera.width}x{camera.height}")
            return est
        # Forward kinematics first: cheap, and no point running the network without it.
        if joint_positions is None:
            est.reason, est.detail = "joint_states", joint_problem or "no joint states at the image stamp"
            return est
        try:
            est.keypoints_base = self.keypoints_base(joint_positions)
        except MissingJointError as exc:
            est.reason = "joint_states"
            est.detail = f"{exc}" + (f" ({joint_problem})" if joint_problem else "")
            return est
        except (InvalidJointValueError, RobotModelError) as exc:
            est.reason, est.detail = "joint_states", str(exc)
            return est
        t1 = time.perf_counter()
        ahead_ms = 0.0  # network time spent before this call (detect() run ahead), counted as inference
        if prepared is not None and prepared.camera is camera and prepared.image_shape == img.shape:
            tf, det = prepared.input_transform, prepared.detection
            ahead_ms = prepared.inference_ms
        else:
            tf = camera.letterbox_transform(*self.detector.input_size)
            det = self.detector.detect(tf.apply_image(img))
        est.input_transform = tf
        t2 = time.perf_counter()
        uv = tf.invert_coords(np.asarray(det.keypoints_uv, dtype=np.float64))
        conf = np.asarray(det.confidence, dtype=np.float64)
        est.keypoints_uv, est.confidence, est.mask = uv, conf, det.mask
        usable = (conf >= self.config.min_confidence) & np.all(np.isfinite(uv), axis=1) & camera.in_image(uv)
        if usable.sum() < self.config.pnp.min_points:
            est.reason = "robot_not_visible"
            est.detail = (f"only {int(usable.sum())} of {len(conf)} keypoints detected with confidence >= "
                          f"{self.config.min_confidence:g}; the robot is out of view, occluded or not recognised")
            est.timings_ms = {"fk": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3 + ahead_ms}
            return est
        pix = np.where(usable[:, None], uv, np.nan)
        try:
            res = solve_pnp(est.keypoints_base, pix, camera, weights=np.where(usable, conf, 0.0), config=self.config.pnp)
        except PnPError as exc:
            est.reason, est.detail = f"pnp_{exc.reason}", str(exc)
            est.timings_ms = {"fk": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3 + ahead_ms}
            return est
        t3 = time.perf_counter()
        est.pnp = res
        est.timings_ms = {"fk": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3 + ahead_ms, "pnp": (t3 - t2) * 1e3}
        if res.rmse_px > self.config.max_rmse_px:
            est.reason = "poor_fit"
            est.detail = f"reprojection error {res.rmse_px:.1f} px exceeds {self.config.max_rmse_px:g} px"
            return est
        est.ok, est.T_camera_base = True, res.T_camera_base
        return est
