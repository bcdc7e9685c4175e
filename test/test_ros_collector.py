"""collector_node in-process: synthetic Image/CameraInfo/JointState in, samples on disk, services and diagnostics.

Same rig as ``test_ros_node.py``: the node and a probe node share one rclpy context, spun by an
executor in a background thread, and frames are fed in lock-step (joint states first, then
camera_info, then the image, then wait until the node has handled it), so no frame is dropped and no
assertion is timed. The arm moves *linearly* in joint space, so the joint positions interpolated at an
image stamp equal the trajectory there exactly.

Also here, without a ROS graph: config/collect.yaml and launch/collect.launch.py against the node's
parameter table, and the diagnostic levels. `make test` runs this inside a private network namespace.
"""

from __future__ import annotations

import ast
import errno
import os
import subprocess
import sys
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ctrnet_ros.collect import dataset  # noqa: E402
from ctrnet_ros.collect.dataset import load_collection  # noqa: E402
from ctrnet_ros.core.camera import PinholeCamera  # noqa: E402
from ctrnet_ros.ros.collector_node import CollectorNode, NodeSetupError, collector_status  # noqa: E402
from ctrnet_ros.ros.collector_parameters import COLLECTOR_PARAMETERS  # noqa: E402
from ctrnet_ros.ros.parameters import ParameterValidationError  # noqa: E402
from test_ros_launch import assert_config_yaml_lists  # noqa: E402
# the calibration node's test helpers
from test_ros_node import camera_info_msg, joint_msg, start_rig, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = ROOT / "config" / "collect.yaml"
LAUNCH_FILE = ROOT / "launch" / "collect.launch.py"
needs_ros_graph = pytest.mark.skipif(os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST",
                                     reason="run through `make test` (loopback-only ROS discovery in a private netns)")

CAMERA = PinholeCamera.from_fov(width=160, height=120, fovy_deg=50.0)
FRAME_ID = "collector_camera_optical_frame"
ARM = [f"panda_joint{i}" for i in range(1, 8)]
_C = np.array([0.0, 0.1, 0.0, -1.9, 0.0, 1.9, 0.8])
_V = np.array([0.9, -0.6, 0.8, 0.5, -0.9, 0.6, 1.2])  # rad/s: 2.1 rad/s L2, 0.07 rad per image
T0_NS = 1_700_000_000_000_000_000
IMAGE_DT_NS = 33_333_333  # 30 Hz
JOINT_DT_NS = 10_000_000  # 100 Hz
JOINT_OFFSET_NS = 3_000_000  # joint stamps never coincide with image stamps


def q_at(t_s: float) -> dict[str, float]:
    """Linear motion: linear interpolation between joint samples is exact."""
    return dict(zip(ARM, (_C + _V * t_s).tolist())) | {"panda_finger_joint1": 0.02}


def image_rgb(i: int) -> np.ndarray:
    """Frame i: seeded 8x8 blocks of colour (sharp)."""
    blocks = np.random.default_rng(i).integers(0, 256, (CAMERA.height // 8, CAMERA.width // 8, 3), dtype=np.uint8)
    return cv2.resize(blocks, CAMERA.size, interpolation=cv2.INTER_NEAREST)


def image_msg(i: int) -> Image:
    stamp = T0_NS + i * IMAGE_DT_NS
    msg = Image()
    msg.header.stamp = Time(sec=stamp // 10**9, nanosec=stamp % 10**9)
    msg.header.frame_id = FRAME_ID
    msg.height, msg.width, msg.encoding, msg.step = CAMERA.height, CAMERA.width, "rgb8", CAMERA.width * 3
    msg.data = image_rgb(i).tobytes()
    return msg


@pytest.fixture(scope="module")
def ros_context():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


_rig_ids = count()


@dataclass
class Rig:
    node: CollectorNode
    probe: object
    executor: MultiThreadedExecutor
    topics: dict
    clients: dict
    diagnostics: list = field(default_factory=list)
    joints_sent: int = 0
    next_joint_ns: int = T0_NS - 50 * JOINT_DT_NS + JOINT_OFFSET_NS  # joint history starts 0.5 s before frame 0
    frames_sent: int = 0

    def handled(self) -> int:
        return self.node.collector.stats.snapshot()["offered"] + self.node.frames_while_paused

    def feed(self, n: int, *, joints_stop_before_s: float | None = None):
        for _ in range(n):
            i = self.frames_sent
            stamp_ns = T0_NS + i * IMAGE_DT_NS
            last_joint_ns = stamp_ns + 15_000_000 if joints_stop_before_s is None else \
                stamp_ns - int(joints_stop_before_s * 1e9)
            while self.next_joint_ns <= last_joint_ns:
                self.topics["joints"].publish(joint_msg(self.next_joint_ns, q_at((self.next_joint_ns - T0_NS) * 1e-9)))
                self.joints_sent += 1
                self.next_joint_ns += JOINT_DT_NS
            sent = self.joints_sent
            wait_for(lambda: self.node.collector.stats.joint_messages >= sent, "joint states to reach the node")
            img = image_msg(i)
            self.topics["info"].publish(camera_info_msg(img.header.stamp, camera=CAMERA))
            wait_for(lambda: self.node.collector.camera is not None, "camera_info to reach the node")
            before = self.handled()
            self.topics["image"].publish(img)
            self.frames_sent += 1
            wait_for(lambda: self.handled() > before, f"frame {i} to be handled")

    def call(self, service: str) -> Trigger.Response:
        client = self.clients[service]
        assert client.wait_for_service(timeout_sec=30.0), f"service {service} not available"
        future = client.call_async(Trigger.Request())
        wait_for(future.done, f"{service} to answer")
        return future.result()

    def my_diagnostics(self):
        name = self.node.get_name()
        return [s for m in list(self.diagnostics) for s in m.status if s.name.startswith(name + ":")]

    def diagnostic(self, what: str, **expected):
        """The newest of this node's diagnostics whose key-values include ``expected`` (waits for it)."""

        def match():
            found = [s for s in self.my_diagnostics()
                     if all({v.key: v.value for v in s.values}.get(k.replace("_", " ")) == v
                            for k, v in expected.items())]
            return found[-1] if found else None

        return wait_for(match, what)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.probe.destroy_node()


@pytest.fixture
def make_rig(ros_context, panda, tmp_path):
    rigs = []

    def _make(params: dict | None = None) -> Rig:
        k = next(_rig_ids)
        ns = f"/crig{k}_{os.getpid()}"
        values = {"output_directory": str(tmp_path / f"collection{k}"), "image_topic": f"{ns}/image_raw",
                  "joint_states_topic": f"{ns}/joint_states", "diagnostics_period_s": 0.1, "max_rate_hz": 0.0,
                  "min_joint_distance": 0.05} | (params or {})
        node = CollectorNode(robot_model=panda, node_name=f"collector_test_{k}", context=ros_context,
                             parameter_overrides=[Parameter(n, value=v) for n, v in values.items()])
        probe = rclpy.create_node(f"collector_probe_{k}", context=ros_context)
        reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        topics = {"image": probe.create_publisher(Image, f"{ns}/image_raw", reliable),
                  "info": probe.create_publisher(CameraInfo, f"{ns}/camera_info", reliable),
                  "joints": probe.create_publisher(JointState, f"{ns}/joint_states", reliable)}
        clients = {s: probe.create_client(Trigger, f"/{node.get_name()}/{s}") for s in ("pause", "resume")}
        rig = Rig(node=node, probe=probe, executor=MultiThreadedExecutor(num_threads=3, context=ros_context),
                  topics=topics, clients=clients)
        probe.create_subscription(DiagnosticArray, "/diagnostics", rig.diagnostics.append, reliable)
        rigs.append(rig)
        start_rig(rig)
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in node.publishers if p.topic_name == "/diagnostics"),
                 "the probe to match /diagnostics")
        return rig

    yield _make
    for rig in rigs:
        rig.close()


# ----------------------------------------------------------------------------------------------
# The node
# ----------------------------------------------------------------------------------------------
@needs_ros_graph
def test_samples_land_on_disk_with_interpolated_joints_and_pause_resume(make_rig):
    rig = make_rig()
    out = Path(rig.node.config.output_directory)
    rig.feed(4)
    assert rig.node.collector.stats.saved == 4
    coll = load_collection(out, check="full")
    assert coll.problems == [] and [s.index for s in coll] == [0, 1, 2, 3]
    for i, s in enumerate(coll):
        assert s.stamp_ns == T0_NS + i * IMAGE_DT_NS and s.frame_id == FRAME_ID and s.base_frame == "panda_link0"
        assert s.joints == pytest.approx(q_at(i * IMAGE_DT_NS * 1e-9), abs=1e-9), "joints at the image stamp"
        np.testing.assert_array_equal(s.image_rgb(), image_rgb(i))
        np.testing.assert_allclose(s.camera.K, CAMERA.K)

    res = rig.call("pause")
    assert res.success and res.message.startswith("paused")
    assert rig.call("pause").message.startswith("already paused")
    rig.feed(2)
    assert rig.node.frames_while_paused == 2 and len(load_collection(out)) == 4, "nothing saved while paused"
    diag = rig.diagnostic("a diagnostic while paused", paused="true", images_while_paused="2")
    assert diag.level == DiagnosticStatus.OK and diag.message.startswith("paused")

    assert rig.call("resume").message.startswith("resumed")
    rig.feed(2)
    assert [s.index for s in load_collection(out, check="full")] == [0, 1, 2, 3, 4, 5]
    diag = rig.diagnostic("a diagnostic after resuming", samples_in_collection="6", paused="false")
    kv = {v.key: v.value for v in diag.values}
    assert diag.level == DiagnosticStatus.OK and diag.message.startswith("collecting: 6 samples")
    assert kv["saved this run"] == "6" and kv["output directory"] == str(out)
    assert int(kv["bytes used"]) == sum(p.stat().st_size for p in (out / "samples").glob("*.png"))
    assert float(kv["quota [MiB]"]) == 4096.0
    summary = rig.node.summary()  # logged at shutdown: where live frames went
    assert "8 images received" in summary and "6 saved" in summary and "dropped while busy" in summary
    assert "ms waiting for joint states" in summary


@needs_ros_graph
def test_stale_joints_and_a_full_collection_in_diagnostics(make_rig):
    rig = make_rig({"max_samples": 2})
    rig.frames_sent = 30  # an image at t = 1 s with joint states only up to 0.5 s before it
    rig.feed(1, joints_stop_before_s=0.5)
    diag = rig.diagnostic("a diagnostic after the stale frame", images_offered="1")
    assert diag.level == DiagnosticStatus.WARN and "stale" in diag.message
    rig.feed(3)
    snap = rig.node.collector.stats.snapshot()
    assert snap["saved"] == 2 and snap["rejections"] == {"joint_states": 1, "max_samples": 1}
    diag = rig.diagnostic("a diagnostic of the full collection", images_offered="4")
    kv = {v.key: v.value for v in diag.values}
    assert diag.level == DiagnosticStatus.WARN and diag.message.startswith("collection full (max_samples)")
    assert kv["rejected: max_samples"] == "1" and kv["collection full"] == "max_samples"


@needs_ros_graph
def test_disk_full_is_an_error_diagnostic_and_the_node_keeps_running(make_rig, monkeypatch):
    rig = make_rig()
    real = dataset._write_all

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset, "_write_all", disk_full)
    rig.feed(1)
    diag = rig.diagnostic("a diagnostic after the failed write", images_offered="1")
    assert diag.level == DiagnosticStatus.ERROR and "the disk is full" in diag.message
    monkeypatch.setattr(dataset, "_write_all", real)
    rig.feed(1)
    diag = rig.diagnostic("a diagnostic after space came back", images_offered="2")
    assert diag.level == DiagnosticStatus.OK, diag.message
    coll = load_collection(rig.node.config.output_directory, check="full")
    assert coll.problems == [] and [s.index for s in coll] == [0]


@needs_ros_graph
def test_invalid_parameters_and_setup_are_reported(ros_context, panda, panda_spec, tmp_path):
    with pytest.raises(ParameterValidationError) as info:
        CollectorNode(robot_model=panda, node_name="collector_badparams", context=ros_context,
                      parameter_overrides=[Parameter("min_confidence", value=1.5),
                                           Parameter("max_samples", value=0)])
    text = str(info.value)
    assert "min_confidence" in text and "max_samples" in text
    with pytest.raises(ParameterValidationError, match="output_directory: not set"):
        CollectorNode(robot_model=panda, node_name="collector_noout", context=ros_context)
    with pytest.raises(NodeSetupError, match="robot"):
        CollectorNode(robot_model=panda, node_name="collector_badrobot", context=ros_context,
                      parameter_overrides=[Parameter("output_directory", value=str(tmp_path / "c")),
                                           Parameter("robot", value="no_such_robot")])

    class WrongModel:
        keypoint_names, input_size = ["a", "b", "c", "d"], (64, 48)

    with pytest.raises(NodeSetupError, match="do not match"):
        CollectorNode(detector=WrongModel(), robot_model=panda, node_name="collector_badmodel", context=ros_context,
                      parameter_overrides=[Parameter("output_directory", value=str(tmp_path / "c"))])


@needs_ros_graph
def test_config_yaml_loads_through_rcl(panda, tmp_path):
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(CONFIG_FILE),
                                  "-p", f"output_directory:={tmp_path / 'c'}", "-p", "start_paused:=true"])
    try:
        node = CollectorNode(robot_model=panda, context=ctx, node_name="collector_yaml")
        cfg = node.config
        assert cfg.start_paused and node.paused and cfg.output_directory == str(tmp_path / "c")
        assert cfg.camera_info_topic == "/camera/color/camera_info" and cfg.quota_bytes == 4096 * 1024 ** 2
        assert cfg.selection.min_joint_distance == 0.1 and (tmp_path / "c" / "collection.yaml").is_file()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


# ----------------------------------------------------------------------------------------------
# Without a ROS graph: diagnostics levels, config file, launch file, console scripts
# ----------------------------------------------------------------------------------------------
def _status(**changes):
    stats = {"offered": 3, "saved": 1, "saved_bytes": 10, "rejections": {"not_novel": 2}, "last_reason": "not_novel",
             "last_detail": "too close", "last_error": "", "write_failing": False, "joint_messages": 9,
             "nan_joint_samples": 0} | changes.pop("stats", {})
    kw = dict(name="c: image collector", hardware_id="/img", image_topic="/img", output_directory="/d", stats=stats,
              images_in=3, dropped=0, paused=False, paused_frames=0, num_samples=1, bytes_used=10, quota_bytes=100,
              max_samples=5, full_reason=None, full_detail="") | changes
    return collector_status(**kw)


def test_collector_diagnostic_levels():
    st = _status()
    kv = {v.key: v.value for v in st.values}
    assert st.level == DiagnosticStatus.OK and st.message == "collecting: 1 samples (1 this run), last frame not_novel"
    assert kv["rejections"] == "not_novel: 2" and kv["quota used [%]"] == "10.0" and kv["paused"] == "false"
    assert _status(paused=True).message.startswith("paused")
    assert _status(images_in=0, stats={"last_reason": None}).level == DiagnosticStatus.WARN
    full = _status(full_reason="quota", full_detail="over the quota")
    assert full.level == DiagnosticStatus.WARN and full.message == "collection full (quota): over the quota"
    err = _status(stats={"write_failing": True, "last_error": "disk full"}, full_reason="quota")
    assert err.level == DiagnosticStatus.ERROR and err.message == "write_error: disk full"
    assert _status(stats={"last_reason": "bad_image"}).level == DiagnosticStatus.ERROR
    assert _status(stats={"last_reason": "joint_states"}).level == DiagnosticStatus.WARN


def test_config_yaml_lists_every_parameter_with_its_default():
    assert_config_yaml_lists(CONFIG_FILE, COLLECTOR_PARAMETERS)
    assert all(p.descriptor().read_only for p in COLLECTOR_PARAMETERS)


def test_launch_file_compiles_and_declares_its_arguments():
    code = "import sys; compile(open(sys.argv[1], encoding='utf-8').read(), sys.argv[1], 'exec')"
    out = subprocess.run([sys.executable, "-c", code, str(LAUNCH_FILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    tree = ast.parse(LAUNCH_FILE.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument" and node.args \
                and isinstance(node.args[0], ast.Constant):
            names.add(node.args[0].value)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_STRING_ARGUMENTS" for t in node.targets):
            table = ast.literal_eval(node.value)
            names |= {row[0] for row in table}
            defaults = {row[0]: row[1] for row in table}
    assert {"params_file", "output_directory", "model", "image_topic", "camera_info_topic", "joint_states_topic",
            "use_sim_time"} <= names
    declared = {p.name: p.default for p in COLLECTOR_PARAMETERS}
    assert all(declared[k] == v for k, v in defaults.items()), "launch defaults equal the parameters' defaults"
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node")
    kw = {k.arg: k.value for k in call.keywords}
    assert ast.literal_eval(kw["package"]) == "ctrnet_ros" and ast.literal_eval(kw["executable"]) == "collector_node"


def test_launch_file_builds_with_real_launch(tmp_path, monkeypatch):
    pytest.importorskip("launch.actions", reason="the ROS 2 launch package is not installed")
    pytest.importorskip("launch_ros.actions", reason="launch_ros is not installed")
    import importlib.util

    from launch import LaunchDescription
    from launch_ros.actions import Node

    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "ctrnet_ros").write_text("")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    spec = importlib.util.spec_from_file_location("collect_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    nodes = [e for e in ld.entities if isinstance(e, Node)]
    assert len(nodes) == 1 and nodes[0].node_executable == "collector_node"


def test_console_scripts_are_declared():
    text = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert '"collector_node = ctrnet_ros.ros.collector_node_main:main"' in text
    assert '"ctrnet-collect = ctrnet_ros.collect.cli:main"' in text
