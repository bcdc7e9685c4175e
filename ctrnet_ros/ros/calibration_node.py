"""``ctrnet_node``: camera images + joint states in, the camera-to-robot transform on TF out.

Thin glue around the core. Data flow::

    image ----> [1-slot, latest wins] --> worker thread: decode -> joints at header.stamp -> estimate
    camera_info, joint_states (callbacks: stored at once)        -> fusion / moving filter -> publish

* The image callback only stores the newest message; a slower worker drops the older waiting one
  (counted) instead of queueing, so latency stays one frame however slow inference is.
* Joint states go into a :class:`~ctrnet_ros.core.timesync.JointStateHistory` in their callback and
  are interpolated at the image's ``header.stamp`` (stale or gapped history rejects the frame; joint
  states that lag the image get ``joint_wait_s`` to arrive first).
* Images use sensor-data QoS (best effort), which matches every camera driver; the subscription
  accepts ``qos_overrides.<topic>.subscription.reliability`` for transports that lose large images.
* TF: ``base_frame -> camera frame`` (``T_base_camera``; the inverse with ``publish_inverse``), stamped
  with the image stamp. Static mode publishes the *fused* pose once ``fusion.min_frames`` distinct joint
  configurations are in (a robot standing still is not calibrated), on ``/tf`` while converging and on ``/tf_static`` once converged (``static_when_converged``);
  moving mode publishes the filtered per-frame pose. Without evidence nothing is published.
* ``~/pose`` (PoseWithCovarianceStamped in base_frame), ``~/overlay`` (only while subscribed),
  ``/diagnostics`` (steady-clock timer), services ``~/reset``, ``~/save``, ``~/reload``.
"""

from __future__ import annotations

import array
import dataclasses
import math
import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped

from ..core import se3
from ..core.camera import CameraModelError
from ..core.estimator import CameraToRobotEstimator, EstimatorConfig, EstimatorSetupError
from ..core.msgfields import (ImageEncodingError, camera_info_msg_to_camera, compressed_image_msg_to_rgb,
                              image_msg_to_rgb, stamp_to_ns)
from ..core.pipeline import CalibrationPipeline, PipelineConfig
from ..core.pnp import covariance_of_inverse
from ..core.robot import KeypointSpec, RobotModel, RobotModelError
from .calibration_file import CalibrationFileError, SavedCalibration, load_calibration, save_calibration
from .conversions import (left_covariance_to_ros, matrix_to_pose_with_covariance_stamped,
                          matrix_to_transform_stamped, ros_covariance_to_left)
from .diagnostics import CalibrationSummary, NodeStats, make_diagnostic_array
from .input_subscriptions import subscribe_camera_and_joints
from .latest_slot import LatestSlot, close_and_join
from .overlay import render_overlay
from .parameters import RUNTIME_PARAMETERS, NodeConfig, ParameterValidationError, declare_and_read
from .tf_broadcast import StaticTransformBroadcaster, TransformBroadcaster

__all__ = ["CalibrationNode", "NodeSetupError", "ParameterValidationError", "load_keypoint_spec"]

#: a converged static transform is re-sent on this many following frames, so that it reaches every
#: listener *after* the last /tf message (tf2 switches a frame's cache to the type of its newest input)
_STATIC_RESENDS = 3


class NodeSetupError(RuntimeError):
    """The node cannot start: a model, robot or calibration file that cannot be loaded."""


def load_keypoint_spec(robot: str) -> KeypointSpec:
    """``robot`` parameter -> keypoint spec: a YAML path, or a built-in name (``config/robots/<name>.yaml``)."""
    if robot.endswith((".yaml", ".yml")) or os.sep in robot:
        return KeypointSpec.from_yaml(robot)
    return KeypointSpec.builtin(robot)


def _load_detector(config: NodeConfig):
    """The detector named by the model parameters (imported lazily: torch/onnxruntime are heavy)."""
    try:
        from ..inference import load_detector
    except ImportError as exc:
        raise NodeSetupError(f"ctrnet_ros.inference.load_detector is not available: {exc}") from exc
    return load_detector(config.model, backend=config.backend, device=config.device,
                         providers=list(config.providers) or None, intra_op_threads=config.inference_threads,
                         spin_wait=config.inference_spin_wait)


@dataclass
class _Frame:
    """A decoded frame between the worker stages (network done when ``prepared`` is set)."""

    msg: Any
    rgb: np.ndarray
    stamp_ns: int
    camera_frame: str
    estimator: Any
    camera: Any
    prepared: Any
    t_received: float  # monotonic: image callback
    t_start: float  # taken off the image slot
    t_decoded: float
    t_inferred: float


@dataclass
class _Published:
    """What the node published last (for ~/save and the diagnostics)."""

    T_base_camera: np.ndarray  # (4, 4)
    cov_base_camera: np.ndarray | None  # (6, 6) left perturbation of T_base_camera
    camera_frame: str
    stamp_ns: int
    frames: int
    converged: bool


class CalibrationNode(Node):
    """The calibration node (see the module docstring).

    Args:
        detector: an already constructed :class:`~ctrnet_ros.core.estimator.KeypointDetector` (tests);
            production leaves it None and the ``model`` parameter is loaded.
        robot_model: an already loaded :class:`~ctrnet_ros.core.robot.RobotModel` (tests; saves URDF parsing).
        node_name: ROS node name.
        **node_kwargs: passed to ``rclpy.node.Node`` (``parameter_overrides``, ``namespace``, ``context``...).
    Raises:
        ParameterValidationError: invalid parameters (every problem listed).
        NodeSetupError: model, robot config or calibration file that cannot be loaded.
    """

    def __init__(self, *, detector=None, robot_model: RobotModel | None = None, node_name: str = "ctrnet_node",
                 **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.config = cfg = declare_and_read(self, model_required=detector is None)
        self.executor_threads = cfg.executor_threads  # read by the entry point (ros2 run / launch)
        log = self.get_logger()
        try:
            self.spec = load_keypoint_spec(cfg.robot)
        except (OSError, RobotModelError) as exc:
            raise NodeSetupError(f"robot: cannot load keypoint config {cfg.robot!r}: {exc}") from exc
        self.base_frame = cfg.base_frame or self.spec.base_link
        self.stats = NodeStats()
        self._lock = threading.RLock()  # guards everything the worker shares with callbacks and services
        self._estimator_config = EstimatorConfig(min_confidence=cfg.min_confidence, max_rmse_px=cfg.max_rmse_px)

        # -- model and robot ----------------------------------------------------------------------
        if detector is None:
            try:
                detector = _load_detector(cfg)
            except NodeSetupError:
                raise
            except Exception as exc:  # ModelLoadError and whatever a backend raises
                raise NodeSetupError(f"model: cannot load {cfg.model!r}: {exc}") from exc
        self._detector = detector
        self._model_label = cfg.model or f"injected {type(detector).__name__}"
        self._robot: RobotModel | None = robot_model
        self._robot_source = "injected" if robot_model is not None else ""
        self._not_ready = ""
        if self._robot is None and cfg.robot_description:
            try:
                self._robot = RobotModel.from_spec(self.spec, urdf_xml=cfg.robot_description)
                self._robot_source = "robot_description parameter"
            except RobotModelError as exc:
                raise NodeSetupError(f"robot_description parameter: {exc}") from exc
        elif self._robot is None:
            try:
                self._robot = RobotModel.from_spec(self.spec)
                self._robot_source = f"default URDF {self.spec.urdf}"
            except (OSError, RobotModelError) as exc:
                self._not_ready = f"no robot model yet (waiting for /robot_description): {exc}"
                log.warning(self._not_ready)
        self._robot_xml = ""  # the /robot_description text the current model came from
        self._estimator = self._build_estimator(self._detector, self._robot, self._model_label)
        # Robot meshes for the outline refinement of the fused pose (built with the robot model; the
        # worker hands them to the pipeline). None, with the reason, when it cannot run.
        self._outline_mesh, self._outline_off = self._load_outline_mesh(self._robot)

        # -- state --------------------------------------------------------------------------------
        # The per-frame logic (joint history, estimate, fusion, what to publish) is the core pipeline,
        # the very code ctrnet-eval replays bags through; this node only moves messages in and out.
        self._pipeline = CalibrationPipeline(self._estimator, PipelineConfig(
            mode=cfg.mode, joints=cfg.joint_history, estimator=self._estimator_config, fusion=cfg.fusion,
            moving=cfg.moving, silhouette=cfg.outline), silhouette_mesh=self._outline_mesh,
            refine_in_background=cfg.outline_background)
        self._pipeline_mesh = self._outline_mesh
        # (camera, problem), replaced as one attribute so the camera_info callback needs no lock: it never
        # waits for a worker's PnP (which holds the lock) and so never delays the image callbacks behind it
        self._camera_state = (None, f"no camera_info received on {cfg.camera_info_topic}")
        # starting calibration from calibration_file: (camera frame, converged, frames); its pose is in the pipeline
        self._seed: tuple[str, bool, int] | None = None
        self._published: _Published | None = None
        self._static_sent: tuple[np.ndarray, int, str] | None = None  # (T_base_camera, segment, child) on /tf_static
        self._static_resends = 0
        self._summary = CalibrationSummary(mode=cfg.mode)

        # -- publishers ---------------------------------------------------------------------------
        self._tf = TransformBroadcaster(self)
        self._tf_static = StaticTransformBroadcaster(self)
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, "~/pose", 10)
        self._overlay_pub = self.create_publisher(Image, "~/overlay", qos_profile_sensor_data)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # -- subscriptions and services -------------------------------------------------------------
        # Two mutually exclusive groups. With executor_threads >= 2 (a MultiThreadedExecutor) the cheap
        # input callbacks (image, camera_info, joint_states) keep flowing while a slow default-group
        # callback runs (a model reload on ~/reload or a parameter change, ~/save file I/O). With the
        # default single thread they wait for it; the joint history (joint_history_s) holds them.
        self._input_group = MutuallyExclusiveCallbackGroup()
        subscribe_camera_and_joints(
            self, image_topic=cfg.subscribed_image_topic, compressed=cfg.compressed,
            camera_info_topic=cfg.camera_info_topic, joint_states_topic=cfg.joint_states_topic,
            on_image=self._on_image, on_camera_info=self._on_camera_info, on_joint_states=self._on_joint_states,
            callback_group=self._input_group)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, "/robot_description", self._on_robot_description, latched)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/save", self._on_save)
        self.create_service(Trigger, "~/reload", self._on_reload)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # Steady clock: diagnostics keep flowing under use_sim_time even when no /clock is published.
        self._diag_timer = self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

        # -- start-up calibration -----------------------------------------------------------------
        if cfg.calibration_file:
            self._load_seed(cfg.calibration_file)

        self._slot: LatestSlot = LatestSlot()
        self._handoff: LatestSlot = LatestSlot()  # pipelined: detected frames waiting for the geometry stage
        if cfg.pipelined:
            self._workers = [threading.Thread(target=self._detect_loop, name="ctrnet_detect", daemon=True),
                             threading.Thread(target=self._geometry_loop, name="ctrnet_geometry", daemon=True)]
        else:
            self._workers = [threading.Thread(target=self._worker_loop, name="ctrnet_worker", daemon=True)]
        for worker in self._workers:
            worker.start()
        log.info(f"ready: {cfg.subscribed_image_topic} + {cfg.camera_info_topic} + {cfg.joint_states_topic} -> TF "
                 f"{self.base_frame} -> {cfg.camera_frame or '<image frame_id>'} ({cfg.mode} mode"
                 f"{', inverse' if cfg.publish_inverse else ''}); model {self._model_label}; robot "
                 f"{self._robot_source or 'pending'}")

    # ------------------------------------------------------------------------------------------
    # set-up helpers
    # ------------------------------------------------------------------------------------------
    def _build_estimator(self, detector, robot: RobotModel | None, label: str) -> CameraToRobotEstimator | None:
        """Estimator for ``detector`` + ``robot`` (None while there is no robot model yet)."""
        if robot is None:
            return None
        try:
            return CameraToRobotEstimator(detector=detector, robot=robot, spec=self.spec,
                                          config=self._estimator_config)
        except EstimatorSetupError as exc:
            raise NodeSetupError(f"model {label!r} does not fit robot config {self.config.robot!r}: {exc}") from exc

    def _load_outline_mesh(self, robot: RobotModel | None):
        """(SilhouetteMesh, "") for ``robot``, or (None, why the outline refinement is off)."""
        cfg = self.config
        if cfg.mode != "static":
            return None, "static mode only"
        if not cfg.outline.enabled:
            return None, "outline.enabled is false"
        if robot is None:
            return None, "no robot model yet"
        try:
            from ..sim.scene import load_silhouette_mesh  # trimesh: only when the refinement runs
        except ImportError as exc:
            return None, f"mesh loading unavailable ({exc})"
        t0 = time.monotonic()
        try:
            mesh = load_silhouette_mesh(robot, max_faces=cfg.outline.mesh_faces)
        except Exception as exc:  # unreadable or missing mesh files, a URDF without meshes, ...
            why = f"cannot load the robot's visual meshes: {type(exc).__name__}: {exc}"
            self.get_logger().warning(f"outline refinement off: {why}")
            return None, why
        self.get_logger().info(f"outline refinement: {len(mesh.faces)} triangles on {len(mesh.links)} links "
                               f"({time.monotonic() - t0:.1f} s)")
        return mesh, ""

    def _outline_status(self) -> str:
        """One line for /diagnostics: what the outline refinement is doing."""
        refiner = self._pipeline.refiner
        if refiner is None:
            off = self._outline_off or "off"
            return f"off: {off}"
        if not getattr(self._detector, "has_mask", True):
            return "off: the model has no mask head"
        pose = refiner.pose
        running = self._pipeline.refine_running
        if pose is None:
            detail = f"; last fit refused: {refiner.last_detail}" if refiner.last_detail else ""
            if running:
                return f"first fit running over {running} frames ({refiner.num_frames} kept){detail}"
            if refiner.num_frames < refiner.config.min_frames:
                return f"collecting: {refiner.num_frames} of {refiner.config.min_frames} frames{detail}"
            return f"{refiner.num_frames} frames kept, fit starts with the next fused frame{detail}"
        text = (f"active: {refiner.refinements} fits, the last over {pose.num_frames} frames moved the keypoint pose "
                f"{pose.correction_m * 1e3:.1f} mm / {pose.correction_deg:.2f} deg (outline RMS {pose.rms_px:.2f} px)")
        text += f"; fit over {running} frames running" if running else ""
        return text + (f"; newest fit refused: {refiner.last_detail}" if refiner.last_detail else "")

    def _load_seed(self, path: str) -> None:
        """Start from a saved calibration (static mode): published until fused frames replace it."""
        cfg = self.config
        if cfg.mode != "static":
            self.get_logger().warning(f"calibration_file {path!r} ignored: it only seeds the static mode")
            return
        try:
            cal = load_calibration(path)
        except CalibrationFileError as exc:
            raise NodeSetupError(f"calibration_file: {exc}") from exc
        cov_pub = None if cal.covariance is None else ros_covariance_to_left(cal.T_parent_child, cal.covariance)
        if cal.parent_frame == self.base_frame:
            camera_frame, T_bc, cov_bc = cal.child_frame, cal.T_parent_child, cov_pub
        elif cal.child_frame == self.base_frame:
            camera_frame, T_bc = cal.parent_frame, se3.invert_transform(cal.T_parent_child)
            cov_bc = None if cov_pub is None else covariance_of_inverse(cal.T_parent_child, cov_pub)
        else:
            raise NodeSetupError(f"calibration_file {path!r} is {cal.parent_frame} -> {cal.child_frame}, which does "
                                 f"not involve base_frame {self.base_frame!r}")
        if cfg.camera_frame and camera_frame != cfg.camera_frame:
            raise NodeSetupError(f"calibration_file {path!r} is for camera frame {camera_frame!r} but camera_frame "
                                 f"is {cfg.camera_frame!r}")
        T_cb = se3.invert_transform(T_bc)
        cov_cb = None if cov_bc is None else covariance_of_inverse(T_bc, cov_bc)
        self._seed = (camera_frame, cal.converged, cal.frames)
        self._pipeline.reset(T_camera_base=T_cb, covariance=cov_cb)
        self.get_logger().info(f"starting calibration from {path}: {self.base_frame} -> {camera_frame}, "
                               f"{cal.frames} frames, converged: {cal.converged}")
        if cal.converged and cfg.static_when_converged:
            # A converged calibration holds at any time: latch it now, as static_transform_publisher would.
            self._publish(T_cb, cov_cb, self.get_clock().now().nanoseconds, camera_frame, converged=True,
                          frames=cal.frames, segment=0)

    # ------------------------------------------------------------------------------------------
    # callbacks (input group: keep them short)
    # ------------------------------------------------------------------------------------------
    def _on_image(self, msg) -> None:
        self.stats.image_received()
        self._slot.put((msg, time.monotonic()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = camera_info_msg_to_camera(msg)
            problem = ""
        except (CameraModelError, ValueError) as exc:
            camera, problem = None, f"camera_info on {self.config.camera_info_topic} is unusable: {exc}"
        self._camera_state = (camera, problem)

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            bad = self._pipeline.add_joint_state(stamp_to_ns(msg.header.stamp), list(msg.name), msg.position)
        except ValueError as exc:  # names and positions differ in length
            self.get_logger().warning(f"ignoring a malformed joint state: {exc}", throttle_duration_sec=5.0)
            self.stats.joints_received(0)
            return
        self.stats.joints_received(len(bad))

    # ------------------------------------------------------------------------------------------
    # callbacks (default group: may be slow)
    # ------------------------------------------------------------------------------------------
    def _on_robot_description(self, msg: String) -> None:
        if self.config.robot_description or self._robot_source == "injected":
            return  # an explicit robot model wins over the topic
        if self._robot_source == "/robot_description" and self._robot_xml == msg.data:
            return
        try:
            robot = RobotModel.from_spec(self.spec, urdf_xml=msg.data)
            with self._lock:
                detector, label = self._detector, self._model_label
            estimator = self._build_estimator(detector, robot, label)
        except (RobotModelError, NodeSetupError) as exc:
            self.get_logger().error(f"/robot_description unusable, keeping the previous robot model: {exc}")
            return
        mesh, off = self._load_outline_mesh(robot)
        with self._lock:
            self._robot, self._estimator, self._robot_source, self._not_ready = robot, estimator, \
                "/robot_description", ""
            self._robot_xml = msg.data
            self._outline_mesh, self._outline_off = mesh, off
        self.get_logger().info("robot model from /robot_description")

    def _reload_model(self, config: NodeConfig) -> tuple[bool, str]:
        """Load the model named by ``config`` and swap it in; keep the old one on failure."""
        if not config.model:
            return False, "the model parameter is empty; nothing to load"
        if not os.path.isfile(config.model):
            return False, f"kept the previous model: {config.model!r} does not exist"
        t0 = time.monotonic()
        try:
            detector = _load_detector(config)
            with self._lock:
                robot = self._robot
            estimator = self._build_estimator(detector, robot, config.model)
        except Exception as exc:  # any loading failure: the running model stays
            self.get_logger().error(f"model reload failed, keeping {self._model_label}: {exc}")
            return False, f"kept the previous model: {exc}"
        with self._lock:
            self._detector, self._model_label = detector, config.model
            if estimator is not None:
                self._estimator = estimator
        msg = f"loaded {config.model} ({config.backend}, {config.device}) in {time.monotonic() - t0:.2f} s"
        self.get_logger().info(msg)
        return True, msg

    def _on_set_parameters(self, params) -> SetParametersResult:
        changed = {p.name: p.value for p in params if p.name in RUNTIME_PARAMETERS}
        if not changed:
            return SetParametersResult(successful=True)
        cfg = self.config
        new = {"model": cfg.model, "backend": cfg.backend, "device": cfg.device, "providers": ",".join(cfg.providers)}
        new.update(changed)
        if new["backend"] not in ("auto", "onnxruntime", "torch"):
            return SetParametersResult(successful=False, reason="backend must be auto, onnxruntime or torch")
        candidate = dataclasses.replace(cfg, model=new["model"], backend=new["backend"], device=new["device"],
                                        providers=tuple(p.strip() for p in new["providers"].split(",") if p.strip()))
        ok, message = self._reload_model(candidate)
        if ok:
            self.config = candidate
        return SetParametersResult(successful=ok, reason="" if ok else message)

    def _on_reload(self, request, response):
        response.success, response.message = self._reload_model(self.config)
        return response

    def _on_reset(self, request, response):
        with self._lock:
            self._pipeline.reset()
            self._seed, self._published, self._static_sent = None, None, None
            state = self._pipeline.fusion_state
            self._summary = CalibrationSummary(mode=self.config.mode, segment=state.segment if state else 0)
        response.success, response.message = True, "calibration cleared; fusing from the next frame"
        self.get_logger().info("~/reset: " + response.message)
        return response

    def _on_save(self, request, response):
        cfg = self.config
        if not cfg.save_directory:
            response.success = False
            response.message = "save_directory parameter is not set; set it (e.g. -p save_directory:=/path) and retry"
            return response
        with self._lock:
            pub = self._published
        if pub is None:
            response.success, response.message = False, "nothing to save: no calibration has been published yet"
            return response
        cal = self._saved_calibration(pub)
        try:
            yaml_path, launch_path = save_calibration(cal, cfg.save_directory)
        except CalibrationFileError as exc:
            response.success, response.message = False, str(exc)
            self.get_logger().error(f"~/save failed: {exc}")
            return response
        response.success = True
        response.message = (f"saved {cal.parent_frame} -> {cal.child_frame} ({cal.frames} frames, converged: "
                            f"{cal.converged}) to {yaml_path} and {launch_path}")
        self.get_logger().info(response.message)
        return response

    def _saved_calibration(self, pub: _Published) -> SavedCalibration:
        """The published pose as it appears on TF (inverted if ``publish_inverse``), ROS-order covariance."""
        T, cov, parent, child = pub.T_base_camera, pub.cov_base_camera, self.base_frame, pub.camera_frame
        if self.config.publish_inverse:
            cov = None if cov is None else covariance_of_inverse(T, cov)
            T, parent, child = se3.invert_transform(T), child, parent
        cov_ros = None if cov is None or not np.all(np.isfinite(cov)) else left_covariance_to_ros(T, cov)
        return SavedCalibration(parent_frame=parent, child_frame=child, T_parent_child=T, covariance=cov_ros,
                                frames=pub.frames, converged=pub.converged, stamp_ns=pub.stamp_ns,
                                mode=self.config.mode)

    def _publish_diagnostics(self) -> None:
        with self._lock:
            summary = CalibrationSummary(**vars(self._summary))
            not_ready = self._not_ready
            model = self._model_label
        self.stats.dropped = self._slot.dropped + self._handoff.dropped
        extra = {"model": model, "TF frames": f"{self.base_frame} -> {self.config.camera_frame or '<image frame_id>'}"
                 + (" (published inverted)" if self.config.publish_inverse else "")}
        if self.config.mode == "static":
            with self._lock:
                extra["outline refinement"] = self._outline_status()
        status = self.stats.report(name=f"{self.get_name()}: camera-to-robot calibration",
                                   hardware_id=self.config.camera_frame or self.config.image_topic,
                                   image_topic=self.config.subscribed_image_topic, summary=summary,
                                   not_ready=not_ready, extra=extra)
        self._diag_pub.publish(make_diagnostic_array(status, self.get_clock().now().to_msg()))

    # ------------------------------------------------------------------------------------------
    # worker thread
    # ------------------------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        """One worker: each frame runs both stages (``pipelined`` false)."""
        self._run_stage(self._slot, lambda item: self._geometry_stage(self._detect_stage(*item)))

    def _detect_loop(self) -> None:
        """Pipelined, stage 1: decode and network; hands the frame on latest-wins."""
        def detect(item):
            frame = self._detect_stage(*item)
            if frame is not None:
                self._handoff.put(frame)
        self._run_stage(self._slot, detect)

    def _geometry_loop(self) -> None:
        """Pipelined, stage 2: joint states, FK, PnP, fusion, publication."""
        self._run_stage(self._handoff, lambda frame: self._geometry_stage(frame, handed_over=True))

    def _run_stage(self, slot: LatestSlot, work) -> None:
        while True:
            item = slot.get()
            if item is None:
                return
            try:
                work(item)
            except Exception as exc:  # never let a worker die silently: report and go on
                self.get_logger().error(f"frame processing failed: {exc}\n{traceback.format_exc()}")
                self.stats.frame_done(reason="internal", detail=f"{type(exc).__name__}: {exc}")

    def _detect_stage(self, msg, t_received: float) -> _Frame | None:
        """Decode the image and run the network; None when the frame was rejected (and reported)."""
        cfg = self.config
        t_start = time.monotonic()
        stamp_ns = stamp_to_ns(msg.header.stamp)
        camera_frame = cfg.camera_frame or msg.header.frame_id
        camera, camera_problem = self._camera_state
        with self._lock:
            estimator, not_ready = self._estimator, self._not_ready

        def reject(reason: str, detail: str) -> None:
            # A static camera's fused pose stays valid whatever this frame's problem is: keep TF fresh.
            if camera_frame:
                self._publish_current(stamp_ns, camera_frame, t_received)
            self.stats.frame_done(reason=reason, detail=detail)

        if not camera_frame:
            return reject("no_frame_id", "the image's header.frame_id is empty and camera_frame is not set")
        if estimator is None:
            return reject("not_ready", not_ready or "no estimator")
        if camera is None:
            return reject("no_camera_info", camera_problem)
        try:
            rgb = compressed_image_msg_to_rgb(msg) if cfg.compressed else image_msg_to_rgb(msg)
        except ImageEncodingError as exc:
            return reject("bad_image", str(exc))
        t_decoded = time.monotonic()

        pipeline = self._pipeline
        with self._lock:  # the workers are the pipeline's only callers besides the joint-state callback
            pipeline.estimator = estimator
            if self._pipeline_mesh is not self._outline_mesh:  # a new robot model came with new meshes
                pipeline.set_silhouette_mesh(self._outline_mesh)
                self._pipeline_mesh = self._outline_mesh
            first_camera = pipeline.camera is None
            if pipeline.set_camera(camera) and not first_camera:
                self.get_logger().warning("camera intrinsics changed: fusion restarted")
                self._seed = None
        # The network does not need the joint states: run it while they are still in flight, outside
        # the lock (camera_info, services and reloads are not held up by inference).
        prepared = estimator.detect(rgb, camera) if cfg.overlap_inference or cfg.pipelined else None
        return _Frame(msg=msg, rgb=rgb, stamp_ns=stamp_ns, camera_frame=camera_frame, estimator=estimator,
                      camera=camera, prepared=prepared, t_received=t_received, t_start=t_start,
                      t_decoded=t_decoded, t_inferred=time.monotonic())

    def _geometry_stage(self, frame: _Frame | None, *, handed_over: bool = False) -> None:
        """Joint states at the image stamp, then FK, PnP, fusion and publication."""
        if frame is None:
            return
        cfg, pipeline = self.config, self._pipeline
        t_picked = time.monotonic()
        if cfg.joint_wait_s > 0:
            # Joint states lagging the image: wait (bounded) so the stamp is interpolated, not held.
            pipeline.wait_for_joints(frame.stamp_ns, cfg.joint_wait_s)
        t_joints = time.monotonic()
        prepared = frame.prepared
        with self._lock:
            if pipeline.estimator is not frame.estimator or pipeline.camera is not frame.camera:
                prepared = None  # reloaded or re-calibrated meanwhile: run it again with the new one
            result = pipeline.process(frame.rgb, frame.stamp_ns, prepared=prepared)
            est = result.estimate
            self._publish_result(result, frame.stamp_ns, frame.camera_frame, frame.t_received)
        stages = {"wait": (frame.t_start - frame.t_received) * 1e3, "decode": (frame.t_decoded - frame.t_start) * 1e3,
                  "joint wait": (t_joints - t_picked) * 1e3, **est.timings_ms}
        if handed_over:
            stages["handoff"] = (t_picked - frame.t_inferred) * 1e3
        self.stats.stage_times(stages)
        if not est.ok:
            self.stats.frame_done(reason=est.reason or "rejected", detail=est.detail,
                                  inference_ms=est.timings_ms.get("inference"))
        else:
            self.stats.frame_done(reason=None, rmse_px=est.rmse_px, inference_ms=est.timings_ms.get("inference"))
        if self._overlay_pub.get_subscription_count() > 0:
            self._publish_overlay(frame.msg, frame.rgb, est, frame.camera)
        # the time the frame spent in the worker(s), from being taken off the image slot
        self.stats.stage_times({"frame": (time.monotonic() - frame.t_start) * 1e3})

    def _publish_current(self, stamp_ns: int, camera_frame: str, t_received: float) -> None:
        """A frame rejected before the pipeline ran: a static camera's fused (or loaded) pose still holds."""
        if self.config.mode != "static":
            return
        state = self._pipeline.fusion_state
        with self._lock:
            if state is not None and state.T_camera_base is not None and not state.disputed:
                self._publish(state.T_camera_base, state.covariance, stamp_ns, camera_frame,
                              converged=state.converged, frames=state.num_frames, segment=state.segment,
                              t_received=t_received)

    def _publish_result(self, result, stamp_ns: int, camera_frame: str, t_received: float) -> None:
        """Publish what the pipeline says to publish for this frame (nothing without evidence). Holds the lock."""
        state = result.fusion
        if state is not None and state.bumped:
            self.get_logger().warning(f"camera bump detected: fusion restarted (segment {state.segment})")
        if state is not None and state.T_camera_base is None:
            self._summary.collecting = f"{state.num_frames} of {self.config.fusion.min_frames}"
        if result.source == "disputed":
            self._summary.disputed = (f"{state.disputed} frames ({state.disputed_configurations} distinct robot "
                                      f"configurations)")
            self.get_logger().warning(
                f"the last {self._summary.disputed} disagree with the fused calibration: the camera may have "
                "moved. Publishing nothing until the robot moves (to confirm a bump and re-converge) or the "
                "frames agree again; ~/reset starts over", throttle_duration_sec=5.0)
        if result.T_camera_base is None:
            return
        if result.source == "fused":
            self._seed = None  # own evidence replaces the starting calibration
            converged, frames, segment = state.converged, state.num_frames, state.segment
            self._summary = CalibrationSummary(mode="static", fused_frames=state.num_frames,
                                               converged=state.converged, trans_std_m=state.trans_std_m,
                                               rot_std_deg=state.rot_std_deg, segment=state.segment,
                                               published_on=self._summary.published_on)
        elif result.source == "saved":
            _, converged, frames = self._seed if self._seed is not None else ("", False, 0)
            segment = state.segment if state is not None else 0
        else:  # moving camera: the filtered per-frame pose
            converged, frames, segment = False, 1, 0
            cov = result.covariance
            if cov is not None:
                self._summary = CalibrationSummary(
                    mode="moving", fused_frames=1, trans_std_m=math.sqrt(max(np.trace(cov[:3, :3]), 0.0)),
                    rot_std_deg=math.degrees(math.sqrt(max(np.trace(cov[3:, 3:]), 0.0))),
                    published_on=self._summary.published_on)
        self._publish(result.T_camera_base, result.covariance, stamp_ns, camera_frame, converged=converged,
                      frames=frames, segment=segment, t_received=t_received)

    def _publish(self, T_cb, cov_cb, stamp_ns: int, camera_frame: str, *, converged: bool, frames: int,
                 segment: int, t_received: float | None = None) -> None:
        """Publish T_base_camera (TF, ~/pose). Caller holds ``self._lock``."""
        cfg = self.config
        T_bc = se3.invert_transform(T_cb)
        cov_bc = None if cov_cb is None or not np.all(np.isfinite(cov_cb)) else covariance_of_inverse(T_cb, cov_cb)
        parent, child, T_pub = self.base_frame, camera_frame, T_bc
        if cfg.publish_inverse:
            parent, child, T_pub = camera_frame, self.base_frame, T_cb
        tf = matrix_to_transform_stamped(T_pub, parent_frame=parent, child_frame=child, stamp_ns=stamp_ns)
        if cfg.mode == "static" and cfg.static_when_converged and converged:
            prev = self._static_sent
            moved = (prev is None or prev[1] != segment or prev[2] != child
                     or se3.translation_error(prev[0], T_bc) > cfg.tf_static_update_m
                     or se3.rotation_error_deg(prev[0], T_bc) > cfg.tf_static_update_deg)
            send = moved or self._static_resends > 0
            if moved:
                self._static_sent, self._static_resends = (T_bc, segment, child), _STATIC_RESENDS
            elif send:
                self._static_resends -= 1
            if send:
                self._tf_static.sendTransform(tf)
                self.stats.tf_sent()
            self._summary.published_on = "/tf_static"
        else:
            self._tf.sendTransform(tf)
            self.stats.tf_sent()
            self._summary.published_on = "/tf"
        self._pose_pub.publish(matrix_to_pose_with_covariance_stamped(T_bc, cov_bc, parent_frame=self.base_frame,
                                                                      stamp_ns=stamp_ns))
        self._published = _Published(T_base_camera=T_bc, cov_base_camera=cov_bc, camera_frame=camera_frame,
                                     stamp_ns=stamp_ns, frames=frames, converged=converged)
        if t_received is not None:
            self.stats.published_after((time.monotonic() - t_received) * 1e3)

    def _publish_overlay(self, msg, rgb, est, camera) -> None:
        with self._lock:
            pub = self._published
        model_uv = None
        if pub is not None and est.keypoints_base is not None:
            model_uv = camera.project_from(se3.invert_transform(pub.T_base_camera), est.keypoints_base)
        status = (f"{est.reason}: {est.detail}"[:90] if not est.ok
                  else f"rmse {est.rmse_px:.2f} px, {self._summary.fused_frames} fused")
        img = render_overlay(rgb, keypoints_uv=est.keypoints_uv, confidence=est.confidence, names=self.spec.names,
                             min_confidence=self.config.min_confidence, model_uv=model_uv, mask=est.mask,
                             input_transform=est.input_transform, status=status)
        out = Image()
        out.header = msg.header
        out.height, out.width = img.shape[:2]
        out.encoding, out.step = "rgb8", img.shape[1] * 3
        out.data = array.array("B", img.tobytes())  # ~4x faster than assigning bytes
        self._overlay_pub.publish(out)

    # ------------------------------------------------------------------------------------------
    # shutdown
    # ------------------------------------------------------------------------------------------
    def destroy_node(self):
        slot = getattr(self, "_slot", None)
        if slot is not None:
            close_and_join(slot, self._workers[0])
            close_and_join(self._handoff, self._workers[-1])
        pipeline = getattr(self, "_pipeline", None)
        if pipeline is not None:
            pipeline.close()
        return super().destroy_node()
