"""A simulated bag replayed into a ``ctrnet_node`` subprocess, with its outputs recorded: demo, bench, tests.

:class:`ReplaySession` owns one rclpy node in the calling process that both plays the bag
(:class:`~ctrnet_ros.ros.bag_player.BagPlayer`) and listens to the node under test (``/tf``,
``/tf_static``, ``/diagnostics``), stamping everything with wall-clock times so that the caller can
compute latencies (image published -> TF received) and rates. The node runs as a real subprocess
(``python -m ctrnet_ros.ros.ctrnet_node_main``), exactly as ``ros2 run ctrnet_ros ctrnet_node`` would.

Everything here starts rclpy: run it inside a private network namespace (``make demo``, ``make bench``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

__all__ = ["ensure_sim_bag", "RECIPE_FILENAME", "node_command", "network_is_private", "use_large_shm_profile",
           "ReplaySession", "ReceivedTf", "NodeProcessError"]


#: Fast DDS profile with a 16 MiB shared-memory segment. With the default 512 KiB segment, a
#: best-effort (sensor-data QoS) subscriber in another process receives almost none of the 0.9 MB
#: 640x480 images (measured here: 5 of 150; 150 of 150 with this profile or with reliable QoS).
_FASTDDS_LARGE_SHM_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>ctrnet_large_shm</transport_id>
      <type>SHM</type>
      <segment_size>16777216</segment_size>
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="ctrnet_large_shm" is_default_profile="true">
    <rtps>
      <userTransports><transport_id>ctrnet_large_shm</transport_id></userTransports>
      <useBuiltinTransports>true</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


def use_large_shm_profile(folder: str | os.PathLike) -> Path | None:
    """Write the large-segment Fast DDS profile into ``folder`` and select it for this process and its children.

    Must run before the first rclpy node of the process is created. Leaves a user's own
    ``FASTDDS_DEFAULT_PROFILES_FILE`` alone (returns None then).
    """
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        return None  # the user's own choice
    path = Path(folder) / "fastdds_large_shm.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_FASTDDS_LARGE_SHM_PROFILE, encoding="utf-8")
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(path)
    return path


class NodeProcessError(RuntimeError):
    """The ctrnet_node subprocess exited or never came up; the message carries its log's tail."""


def network_is_private() -> bool:
    """True inside a network namespace whose only interface is loopback (no DDS traffic can leave)."""
    import socket

    try:  # the calling process's network namespace (/sys/class/net would show the host's)
        return {name for _, name in socket.if_nameindex()} <= {"lo"}
    except OSError:
        return False


#: written beside a bag ensure_sim_bag recorded: the settings it was recorded with
RECIPE_FILENAME = "ctrnet_recording.json"


def ensure_sim_bag(path: str | os.PathLike, *, duration_s: float = 10.0, seed: int = 1, width: int = 640,
                   height: int = 480, domain: str = "train", distance_m: tuple[float, float] | None = (1.1, 1.5),
                   camera_hz: float = 30.0, scene_seed: int | None = None, scene_duration_s: float | None = None,
                   start_s: float = 0.0, progress: bool = True) -> Path:
    """Reuse the sim bag at ``path`` if complete and recorded with these settings, else record it.

    Recording: :func:`~ctrnet_ros.sim.recording.record_sim_bag`; the settings go into
    ``RECIPE_FILENAME`` beside the bag, written last. ``distance_m`` places the camera the way a fixed
    calibration camera usually is (1.1-1.5 m from the robot's sweep) rather than anywhere in the
    preset's 0.8-2.5 m; None keeps the preset's range. ``scene_seed``/``scene_duration_s``/``start_s``: one
    window of a cell's recording (same fixed camera as the cell's other windows).
    """
    from ..sim.bag import GROUNDTRUTH_FILENAME

    path = Path(path)
    recipe = {"duration_s": float(duration_s), "seed": int(seed), "width": int(width), "height": int(height),
              "domain": domain, "distance_m": list(distance_m) if distance_m else None, "camera_hz": float(camera_hz),
              "scene_seed": scene_seed, "scene_duration_s": scene_duration_s, "start_s": float(start_s)}
    recipe_file = path / RECIPE_FILENAME
    if (path / "metadata.yaml").is_file() and (path / GROUNDTRUTH_FILENAME).is_file():
        try:
            if json.loads(recipe_file.read_text()) == recipe:
                return path
        except (OSError, ValueError):
            pass  # recorded by an older version, or by hand: record again rather than trust it
    from ..sim.recording import record_sim_bag

    if path.exists():
        shutil.rmtree(path)  # an interrupted recording, or one with other settings: start over
    path.parent.mkdir(parents=True, exist_ok=True)
    record_sim_bag(path, domain=domain, duration_s=duration_s, seed=seed, width=width, height=height,
                   camera_hz=camera_hz, domain_overrides={"distance_m": tuple(distance_m)} if distance_m else None,
                   scene_seed=scene_seed, scene_duration_s=scene_duration_s, start_s=start_s, progress=progress)
    recipe_file.write_text(json.dumps(recipe, indent=1) + "\n")  # last: marks the recording complete
    return path


def node_command(params: Mapping[str, object], *, node_name: str = "ctrnet_node",
                 module: str = "ctrnet_ros.ros.ctrnet_node_main") -> list[str]:
    """argv of a node subprocess (``python -m module``, default ctrnet_node) with ``-p name:=value`` per parameter."""
    cmd = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={node_name}"]
    for name, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        cmd += ["-p", f"{name}:={text}"]
    return cmd


@dataclass
class ReceivedTf:
    parent: str
    child: str
    stamp_ns: int
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]  # x, y, z, w
    received_s: float  # wall time (time.time()) of reception
    static: bool


@dataclass
class _Recorder:
    tf: list[ReceivedTf] = field(default_factory=list)
    diagnostics: list[tuple[float, object]] = field(default_factory=list)  # (wall time, DiagnosticStatus)
    image_published_s: dict[int, float] = field(default_factory=dict)  # image stamp -> wall time published


class ReplaySession:
    """Player + listener node in this process, ``ctrnet_node`` in a subprocess (use as a context manager).

    Args:
        bag: rosbag2 directory to play.
        node_params: parameters of the node under test (``model`` included).
        log_path: where the subprocess's output goes.
        node_name: name of the node under test (its diagnostics are recognised by it).
    """

    def __init__(self, bag, node_params: Mapping[str, object], *, log_path: str | os.PathLike,
                 node_name: str = "ctrnet_node", rate: float = 1.0):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        from .bag_player import BagPlayer

        self.bag, self.node_name = Path(bag), node_name
        self.log_path = Path(log_path)
        self.fastdds_profile = use_large_shm_profile(self.log_path.parent)
        self.rec = _Recorder()
        self._lock = threading.Lock()
        self._context = rclpy.context.Context()
        rclpy.init(context=self._context)
        try:
            self.node = rclpy.create_node("ctrnet_replay", context=self._context)
            self.player = BagPlayer(self.node, self.bag, rate=rate, on_publish=self._on_published)
        except BaseException:
            rclpy.try_shutdown(context=self._context)
            raise
        self.image_topics = [t for t, p in self.player.publishers.items()
                             if p.msg_type.__name__ in ("Image", "CompressedImage")]
        tf_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        static_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), tf_qos)
        self.node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), static_qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._spin_thread = threading.Thread(target=self._spin, name="replay_spin", daemon=True)
        self._spin_thread.start()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(node_command(node_params, node_name=node_name), stdout=self._log,
                                        stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.node_exit_code: int | None = None

    # -- callbacks -----------------------------------------------------------------------------
    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def _on_published(self, topic, msg, wall_s) -> None:
        if topic in self.image_topics:
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            with self._lock:
                self.rec.image_published_s[stamp] = wall_s

    def _on_tf(self, msg, static: bool) -> None:
        now = time.time()
        with self._lock:
            for t in msg.transforms:
                tr, r = t.transform.translation, t.transform.rotation
                self.rec.tf.append(ReceivedTf(parent=t.header.frame_id, child=t.child_frame_id,
                                              stamp_ns=t.header.stamp.sec * 10**9 + t.header.stamp.nanosec,
                                              translation=(tr.x, tr.y, tr.z), rotation=(r.x, r.y, r.z, r.w),
                                              received_s=now, static=static))

    def _on_diagnostics(self, msg) -> None:
        now = time.time()
        with self._lock:
            for s in msg.status:
                if s.name.startswith(self.node_name + ":"):
                    self.rec.diagnostics.append((now, s))

    # -- control -------------------------------------------------------------------------------
    def _log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_until_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until the node subscribes to the images (model loaded) and publishes diagnostics."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NodeProcessError(f"ctrnet_node exited with status {self.process.returncode}:\n"
                                       f"{self._log_tail()}")
            if self.player.wait_for_subscribers(0.1, self.image_topics) and self.last_diagnostic() is not None:
                return
        raise NodeProcessError(f"ctrnet_node did not come up within {timeout_s:.0f} s:\n{self._log_tail()}")

    def play(self):
        """Replay the whole bag (blocking); returns the player's summary."""
        return self.player.play()

    def last_diagnostic(self):
        with self._lock:
            return self.rec.diagnostics[-1][1] if self.rec.diagnostics else None

    def diagnostic_values(self) -> dict[str, str]:
        d = self.last_diagnostic()
        return {} if d is None else {v.key: v.value for v in d.values}

    def wait_until_idle(self, *, settle_s: float = 1.5, timeout_s: float = 30.0) -> None:
        """After playback: wait until the node's processed-frame count stops changing for ``settle_s``."""
        deadline = time.monotonic() + timeout_s
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            value = (self.diagnostic_values().get("processed frames"), len(self.rec.tf))
            if value != last:
                last, since = value, time.monotonic()
            elif time.monotonic() - since >= settle_s:
                return
            time.sleep(0.1)

    def call_service(self, name: str, timeout_s: float = 10.0):
        """Call ``/<node_name>/<name>`` (std_srvs/Trigger); returns the response or None on timeout."""
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, f"/{self.node_name}/{name}")
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return None
            future = client.call_async(Trigger.Request())
            deadline = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            return future.result() if future.done() else None
        finally:
            self.node.destroy_client(client)

    def stop_node(self, timeout_s: float = 15.0) -> int:
        """SIGINT the node (as Ctrl-C would) and return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.node_exit_code = self.process.returncode
        return self.node_exit_code

    def close(self) -> None:
        import rclpy

        self.stop_node()
        self._log.close()
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._context)
        self._spin_thread.join(timeout=5.0)

    def __enter__(self) -> "ReplaySession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
