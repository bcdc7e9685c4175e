"""``collector_node``: saves unlabeled camera frames that add information, for the self-supervised refresh.

Thin glue around :class:`~ctrnet_ros.collect.collector.Collector`, the very code ``ctrnet-collect``
runs on bags. Data flow::

    image ----> [1-slot, latest wins] --> worker thread: joints at header.stamp -> checks -> PNG + manifest
    camera_info, joint_states (callbacks: stored at once)

* Images use sensor-data QoS (best effort) and a one-slot hand-off: a worker busy writing a PNG drops
  the older waiting frame (counted) instead of queueing, so memory stays bounded.
* Joint states are interpolated at the image's ``header.stamp`` with the calibration node's rules
  (stale, extrapolated or gapped history rejects the frame; joint states that lag the image get
  ``joint_wait_s`` to arrive first).
* ``output_directory`` is a parameter and sample names come from a counter: nothing in a message
  decides where anything is written.
* Services ``~/pause`` and ``~/resume`` (std_srvs/Trigger); ``/diagnostics`` with the saved count,
  rejections by reason, bytes used against the quota and the paused state. A full disk or quota is
  an ERROR/WARN diagnostic; the node keeps running and the collection stays intact.
"""

from __future__ import annotations

import threading
import time
import traceback

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, JointState
from std_srvs.srv import Trigger

from ..collect.collector import Collector, DetectorMismatchError
from ..collect.dataset import CollectionError, CollectionWriter
from ..core.camera import CameraModelError
from ..core.msgfields import camera_info_msg_to_camera, compressed_image_msg_to_rgb, image_msg_to_rgb, stamp_to_ns
from ..core.robot import RobotModel, RobotModelError
from .calibration_node import NodeSetupError, load_keypoint_spec
from .collector_parameters import CollectorNodeConfig, declare_and_read_collector
from .diagnostics import make_diagnostic_array
from .input_subscriptions import subscribe_camera_and_joints
from .latest_slot import LatestSlot, close_and_join
from .parameters import ParameterValidationError

__all__ = ["CollectorNode", "NodeSetupError", "ParameterValidationError", "collector_status", "ERROR_REASONS"]

#: rejection tags that mean the set-up or the disk is broken (ERROR); "joint_states" is WARN, the rest
#: (rate, not_novel, blurry, low_confidence...) are the collector doing its job
ERROR_REASONS = frozenset({"bad_image", "camera_mismatch", "no_camera_info", "write_error", "internal"})
_MIB = 1024 ** 2


def collector_status(*, name: str, hardware_id: str, image_topic: str, output_directory: str, stats: dict,
                     images_in: int, dropped: int, paused: bool, paused_frames: int, num_samples: int,
                     bytes_used: int, quota_bytes: int, max_samples: int, full_reason: str | None,
                     full_detail: str) -> DiagnosticStatus:
    """The collector's DiagnosticStatus (pure: tested without a node).

    Level: ERROR while writes fail (disk full) or the input is unusable; WARN when the collection is
    full, joint states are missing at the image stamps, or no image arrived yet; OK otherwise (paused
    included).
    """
    st = DiagnosticStatus(name=name, hardware_id=hardware_id)
    last_reason, last_detail = stats["last_reason"], stats["last_detail"]
    if stats["write_failing"]:
        st.level, st.message = DiagnosticStatus.ERROR, f"write_error: {stats['last_error']}"
    elif full_reason is not None:
        st.level, st.message = DiagnosticStatus.WARN, f"collection full ({full_reason}): {full_detail}"
    elif last_reason in ERROR_REASONS:
        st.level, st.message = DiagnosticStatus.ERROR, f"{last_reason}: {last_detail}"
    elif paused:
        st.level, st.message = DiagnosticStatus.OK, f"paused ({num_samples} samples in the collection)"
    elif images_in == 0:
        st.level, st.message = DiagnosticStatus.WARN, f"waiting for images on {image_topic}"
    elif last_reason == "joint_states":
        st.level, st.message = DiagnosticStatus.WARN, f"{last_reason}: {last_detail}"
    else:
        st.level = DiagnosticStatus.OK
        st.message = (f"collecting: {num_samples} samples ({stats['saved']} this run)" +
                      (f", last frame {last_reason}" if last_reason else ""))
    rejections: dict = stats["rejections"]
    kv = {
        "output directory": output_directory,
        "image topic": image_topic,
        "paused": str(paused).lower(),
        "samples in collection": str(num_samples),
        "saved this run": str(stats["saved"]),
        "max samples": str(max_samples),
        "bytes used": str(bytes_used),
        "bytes used [MiB]": f"{bytes_used / _MIB:.2f}",
        "quota [MiB]": f"{quota_bytes / _MIB:.1f}",
        "quota used [%]": f"{100.0 * bytes_used / quota_bytes:.1f}",
        "collection full": full_reason or "no",
        "images received": str(images_in),
        "images offered": str(stats["offered"]),
        "images while paused": str(paused_frames),
        "dropped frames": str(dropped),
        "rejected frames": str(sum(rejections.values())),
        "rejections": ", ".join(f"{k}: {v}" for k, v in sorted(rejections.items())) or "none",
        "last rejection": f"{last_reason}: {last_detail}" if last_reason else "none",
        "last write error": stats["last_error"] or "none",
        "joint state messages": str(stats["joint_messages"]),
        "NaN joint samples": str(stats["nan_joint_samples"]),
    }
    kv.update({f"rejected: {k}": str(v) for k, v in sorted(rejections.items())})
    st.values = [KeyValue(key=k, value=v) for k, v in kv.items()]
    return st


class CollectorNode(Node):
    """The collector node (see the module docstring).

    Args:
        detector: an already constructed keypoint detector (tests); production leaves it None and the
            optional ``model`` parameter is loaded.
        robot_model: an already loaded :class:`~ctrnet_ros.core.robot.RobotModel` (tests).
        node_name: ROS node name.
        **node_kwargs: passed to ``rclpy.node.Node``.
    Raises:
        ParameterValidationError: invalid parameters (every problem listed).
        NodeSetupError: robot config, model or output directory that cannot be used.
    """

    def __init__(self, *, detector=None, robot_model: RobotModel | None = None, node_name: str = "collector_node",
                 **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.config = cfg = declare_and_read_collector(self)
        log = self.get_logger()
        try:
            spec = load_keypoint_spec(cfg.robot)
        except (OSError, RobotModelError) as exc:
            raise NodeSetupError(f"robot: cannot load keypoint config {cfg.robot!r}: {exc}") from exc
        robot = robot_model
        if robot is None:
            try:
                robot = RobotModel.from_spec(spec, urdf_xml=cfg.robot_description or None)
            except (OSError, RobotModelError) as exc:
                raise NodeSetupError(f"robot: cannot load the URDF of {cfg.robot!r}: {exc}") from exc
        self.base_frame = cfg.base_frame or spec.base_link
        if detector is None and cfg.model:
            detector = _load_detector(cfg)
        if detector is not None:
            try:
                Collector.check_detector(detector, spec.names)
            except DetectorMismatchError as exc:
                raise NodeSetupError(f"model {cfg.model or type(detector).__name__!r}: {exc}") from exc
        self._model_label = cfg.model or (f"injected {type(detector).__name__}" if detector is not None else "none")
        try:
            self._writer = CollectionWriter(cfg.output_directory, max_samples=cfg.max_samples,
                                            quota_bytes=cfg.quota_bytes, robot=spec.robot, base_frame=self.base_frame)
        except CollectionError as exc:
            raise NodeSetupError(f"output_directory: {exc}") from exc
        except OSError as exc:
            raise NodeSetupError(f"output_directory: cannot open {cfg.output_directory!r}: {exc}") from exc
        self.collector = Collector(self._writer, required_joints=robot.required_joints(spec.links),
                                   config=cfg.selection, detector=detector, joint_history=cfg.joint_history)
        for problem in self._writer.problems:
            log.warning(f"collection {cfg.output_directory}: {problem}")

        self._lock = threading.Lock()  # guards the counters below
        self._paused = cfg.start_paused
        self._images_in = 0
        self._paused_frames = 0
        self._worker_s = {"joint_wait": 0.0, "offer": 0.0, "frames": 0}  # worker thread's time, for the summary

        # -- publishers, subscriptions, services ----------------------------------------------------
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # The input callbacks get their own group (they would keep flowing beside a service under a
        # MultiThreadedExecutor; collector_node spins a single-threaded one, as all its callbacks are short).
        self._input_group = MutuallyExclusiveCallbackGroup()
        subscribe_camera_and_joints(
            self, image_topic=cfg.subscribed_image_topic, compressed=cfg.compressed,
            camera_info_topic=cfg.camera_info_topic, joint_states_topic=cfg.joint_states_topic,
            on_image=self._on_image, on_camera_info=self._on_camera_info, on_joint_states=self._on_joint_states,
            callback_group=self._input_group)
        self.create_service(Trigger, "~/pause", self._on_pause)
        self.create_service(Trigger, "~/resume", self._on_resume)
        # Steady clock: diagnostics keep flowing under use_sim_time even when no /clock is published.
        self._diag_timer = self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

        self._slot: LatestSlot = LatestSlot()
        self._worker = threading.Thread(target=self._worker_loop, name="collector_worker", daemon=True)
        self._worker.start()
        log.info(f"ready: {cfg.subscribed_image_topic} + {cfg.camera_info_topic} + {cfg.joint_states_topic} -> "
                 f"{cfg.output_directory} ({self._writer.num_samples} samples there, next index "
                 f"{self._writer.next_index}); model {self._model_label}; "
                 f"{'paused' if self._paused else 'collecting'}")

    # ------------------------------------------------------------------------------------------
    # callbacks (input group: keep them short)
    # ------------------------------------------------------------------------------------------
    def _on_image(self, msg) -> None:
        with self._lock:
            self._images_in += 1
            if self._paused:
                self._paused_frames += 1
                return
        self._slot.put(msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = camera_info_msg_to_camera(msg)
        except (CameraModelError, ValueError) as exc:
            self.get_logger().warning(f"camera_info on {self.config.camera_info_topic} is unusable: {exc}",
                                      throttle_duration_sec=5.0)
            camera = None
        self.collector.set_camera(camera)

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            self.collector.add_joint_state(stamp_to_ns(msg.header.stamp), list(msg.name), msg.position)
        except ValueError as exc:  # names and positions differ in length
            self.get_logger().warning(f"ignoring a malformed joint state: {exc}", throttle_duration_sec=5.0)

    # ------------------------------------------------------------------------------------------
    # services and diagnostics (default group)
    # ------------------------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    @property
    def frames_while_paused(self) -> int:
        """Images received (or waiting) while paused, and not offered to the collector."""
        with self._lock:
            return self._paused_frames

    def _set_paused(self, paused: bool, response):
        with self._lock:
            was, self._paused = self._paused, paused
        n = self._writer.num_samples
        verb = "paused" if paused else "resumed"
        response.success = True
        response.message = (f"already {verb}" if was == paused else verb) + f" ({n} samples in the collection)"
        self.get_logger().info(f"~/{'pause' if paused else 'resume'}: {response.message}")
        return response

    def _on_pause(self, request, response):
        return self._set_paused(True, response)

    def _on_resume(self, request, response):
        return self._set_paused(False, response)

    def status(self) -> DiagnosticStatus:
        """The current diagnostic status (also published on /diagnostics)."""
        w, cfg = self._writer, self.config
        with self._lock:
            images_in, paused, paused_frames = self._images_in, self._paused, self._paused_frames
        return collector_status(
            name=f"{self.get_name()}: image collector", hardware_id=cfg.image_topic,
            image_topic=cfg.subscribed_image_topic, output_directory=cfg.output_directory,
            stats=self.collector.stats.snapshot(), images_in=images_in, dropped=self._slot.dropped, paused=paused,
            paused_frames=paused_frames, num_samples=w.num_samples, bytes_used=w.bytes_used,
            quota_bytes=w.quota_bytes, max_samples=w.max_samples, full_reason=w.full_reason,
            full_detail=w.full_detail)

    def summary(self) -> str:
        """One line for the log at shutdown: what arrived, what was lost, what was saved and why not."""
        stats = self.collector.stats.snapshot()
        with self._lock:
            images_in, w = self._images_in, dict(self._worker_s)
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats["rejections"].items())) or "none"
        n = max(1, w["frames"])
        return (f"summary: {images_in} images received, {self._slot.dropped} dropped while busy (latest wins), "
                f"{stats['offered']} offered to selection, {stats['saved']} saved; rejected: {rejected}; "
                f"worker per frame: {1e3 * w['joint_wait'] / n:.1f} ms waiting for joint states, "
                f"{1e3 * w['offer'] / n:.1f} ms judging and saving" +
                "".join(f"; last {k}: {v}" for k, v in sorted(stats["last_detail_by_reason"].items())
                        if k not in ("not_novel", "rate")))

    def _publish_diagnostics(self) -> None:
        self._diag_pub.publish(make_diagnostic_array(self.status(), self.get_clock().now().to_msg()))

    # ------------------------------------------------------------------------------------------
    # worker thread
    # ------------------------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while True:
            msg = self._slot.get()
            if msg is None:
                return
            try:
                self._process(msg)
            except Exception as exc:  # never let the worker die silently: report and go on
                self.get_logger().error(f"frame processing failed: {exc}\n{traceback.format_exc()}")

    def _process(self, msg) -> None:
        cfg = self.config
        if self.paused:  # paused while the frame waited in the slot
            with self._lock:
                self._paused_frames += 1
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        t0 = time.perf_counter()
        if cfg.joint_wait_s > 0:
            # Joint states lagging the image: wait (bounded) so the stamp is interpolated, not held.
            self.collector.wait_for_joints(stamp_ns, cfg.joint_wait_s)
        t1 = time.perf_counter()
        decode = (lambda: compressed_image_msg_to_rgb(msg)) if cfg.compressed else (lambda: image_msg_to_rgb(msg))
        decision = self.collector.offer(decode, stamp_ns=stamp_ns, frame_id=msg.header.frame_id)
        with self._lock:
            w = self._worker_s
            w["joint_wait"] += t1 - t0
            w["offer"] += time.perf_counter() - t1
            w["frames"] += 1
        log = self.get_logger()
        if decision.saved:
            s = decision.sample
            log.debug(f"saved sample {s.index} ({s.bytes / 1e3:.0f} kB, {decision.joint_distance:.3f} rad from the "
                      f"nearest, sharpness {decision.sharpness:.0f})")
        elif decision.reason == "write_error":
            log.error(decision.detail, throttle_duration_sec=10.0)
        elif decision.reason in ("max_samples", "quota"):
            log.warning(f"collection full: {decision.detail}", throttle_duration_sec=60.0)

    # ------------------------------------------------------------------------------------------
    # shutdown
    # ------------------------------------------------------------------------------------------
    def destroy_node(self):
        slot = getattr(self, "_slot", None)
        if slot is not None:
            close_and_join(slot, self._worker)
            self.get_logger().info(self.summary())
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()
        return super().destroy_node()


def _load_detector(cfg: CollectorNodeConfig):
    """The optional model (imported lazily: torch/onnxruntime are heavy)."""
    try:
        from ..inference import load_detector
    except ImportError as exc:
        raise NodeSetupError(f"model: ctrnet_ros.inference is not available: {exc}") from exc
    try:
        return load_detector(cfg.model, backend=cfg.backend, device=cfg.device, providers=list(cfg.providers) or None)
    except Exception as exc:  # ModelLoadError and whatever a backend raises
        raise NodeSetupError(f"model: cannot load {cfg.model!r}: {exc}") from exc
