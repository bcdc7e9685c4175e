"""launch/ctrnet.launch.py and config/ctrnet.yaml: syntax, arguments, and agreement with the node.

The launch file is checked three ways: compiled by a fresh interpreter (always), its arguments read
from the syntax tree (always), and built with the real ``launch``/``launch_ros`` (skipped where they
are not installed: they are not on PyPI). Note: from the repository root, ``import launch`` alone
succeeds (the ``launch/`` folder is a namespace package), so the skip tests ``launch.actions``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = ROOT / "launch" / "ctrnet.launch.py"
CONFIG_FILE = ROOT / "config" / "ctrnet.yaml"
ARGUMENTS = ["params_file", "model", "image_topic", "camera_info_topic", "joint_states_topic", "base_frame",
             "camera_frame", "use_sim_time"]


def test_launch_file_compiles():
    code = "import sys; compile(open(sys.argv[1], encoding='utf-8').read(), sys.argv[1], 'exec')"
    out = subprocess.run([sys.executable, "-c", code, str(LAUNCH_FILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def _declared_arguments(tree: ast.AST) -> set[str]:
    """Names of DeclareLaunchArgument calls, following the module-level argument table."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            if node.args and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_STRING_ARGUMENTS" for t in node.targets):
            names |= {row[0] for row in ast.literal_eval(node.value)}
    return names


def test_launch_file_declares_the_arguments_without_launch():
    tree = ast.parse(LAUNCH_FILE.read_text(encoding="utf-8"))
    assert set(ARGUMENTS) <= _declared_arguments(tree)
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    node_calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]
    kw = {k.arg: k.value for k in node_calls[0].keywords}
    assert ast.literal_eval(kw["package"]) == "ctrnet_ros" and ast.literal_eval(kw["executable"]) == "ctrnet_node"


def test_ctrnet_node_console_script_is_declared():
    text = (ROOT / "setup.py").read_text(encoding="utf-8")
    assert '"ctrnet_node = ctrnet_ros.ros.ctrnet_node_main:main"' in text
    assert '"ctrnet-play = ctrnet_ros.ros.bag_player:main"' in text


@pytest.fixture
def fake_share(tmp_path, monkeypatch):
    """An ament prefix holding ctrnet_ros's share folder, as colcon would install it."""
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "ctrnet_ros").write_text("")
    (prefix / "share" / "ctrnet_ros" / "config").mkdir(parents=True)
    (prefix / "share" / "ctrnet_ros" / "config" / "ctrnet.yaml").write_text(CONFIG_FILE.read_text())
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    return prefix / "share" / "ctrnet_ros"


def test_launch_file_builds_with_real_launch(fake_share):
    pytest.importorskip("launch.actions", reason="the ROS 2 launch package is not installed")
    pytest.importorskip("launch_ros.actions", reason="launch_ros is not installed")
    from launch import LaunchDescription, LaunchIntrospector
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("ctrnet_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    args = {e.name: e for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    assert set(ARGUMENTS) <= set(args)
    assert args["params_file"].default_value[0].text == str(fake_share / "config" / "ctrnet.yaml")
    nodes = [e for e in ld.entities if isinstance(e, Node)]
    assert len(nodes) == 1
    assert nodes[0].node_package == "ctrnet_ros" and nodes[0].node_executable == "ctrnet_node"
    assert "ctrnet_node" in LaunchIntrospector().format_launch_description(ld)


# ----------------------------------------------------------------------------------------------
# config/ctrnet.yaml
# ----------------------------------------------------------------------------------------------
def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def assert_config_yaml_lists(config_file: Path, specs) -> None:
    """``config_file`` (``/**: ros__parameters``) names every ParamSpec of ``specs``, and no other, with
    its default (same value and type). Also used for config/collect.yaml."""
    data = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    in_yaml = dict(_flat(data["/**"]["ros__parameters"]))
    declared = {p.name: p.default for p in specs}
    assert sorted(set(in_yaml) - set(declared)) == [] and sorted(set(declared) - set(in_yaml)) == []
    for name, default in declared.items():
        assert type(in_yaml[name]) is type(default) and in_yaml[name] == default, name


def test_config_yaml_lists_every_parameter_with_its_default():
    pytest.importorskip("rclpy")
    from ctrnet_ros.ros.parameters import PARAMETERS

    assert_config_yaml_lists(CONFIG_FILE, PARAMETERS)


@pytest.mark.skipif(os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST",
                    reason="run through `make test` (loopback-only ROS discovery in a private netns)")
def test_config_yaml_loads_through_rcl(panda, panda_spec):
    """rcl's own YAML parser accepts the file and the node takes every value from it."""
    rclpy = pytest.importorskip("rclpy")
    from ctrnet_ros.ros.calibration_node import CalibrationNode

    class NullDetector:
        keypoint_names, input_size = panda_spec.names, (64, 48)

        def detect(self, rgb):
            raise AssertionError("not called")

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(CONFIG_FILE), "-p", "mode:=moving"])
    try:
        node = CalibrationNode(detector=NullDetector(), robot_model=panda, context=ctx, node_name="ctrnet_yaml")
        assert node.config.mode == "moving"  # the command line wins over the file
        assert node.config.fusion.max_frames == 300 and node.config.camera_info_topic == "/camera/color/camera_info"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
