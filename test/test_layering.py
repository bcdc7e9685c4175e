"""The core, models, training, sim, eval and collect never import rclpy or ROS message packages."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "ctrnet_ros"
ROS_FREE = ["core", "net", "inference", "sim", "train", "eval", "collect"]
FORBIDDEN_PREFIXES = ("rclpy", "tf2_ros", "cv_bridge", "message_filters", "launch")
FORBIDDEN_SUFFIX = "_msgs"


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("room", ROS_FREE)
def test_no_ros_imports_in_source(room):
    offenders = []
    for path in sorted((PKG / room).rglob("*.py")):
        for mod in _imports(path):
            top = mod.split(".")[0]
            if top.startswith(FORBIDDEN_PREFIXES) or top.endswith(FORBIDDEN_SUFFIX):
                offenders.append(f"{path.relative_to(PKG)}: {mod}")
    assert not offenders, "ROS imports outside ctrnet_ros/ros:\n" + "\n".join(offenders)


def test_core_imports_with_rclpy_unimportable():
    """Run in a fresh interpreter where importing rclpy or any *_msgs package raises ImportError."""
    code = """
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split('.')[0]
        if top in ('rclpy', 'tf2_ros') or top.endswith('_msgs'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
import ctrnet_ros.core
for m in pkgutil.iter_modules(ctrnet_ros.core.__path__):
    importlib.import_module('ctrnet_ros.core.' + m.name)
assert not any(k.split('.')[0] == 'rclpy' for k in sys.modules)
print('ok', len(list(pkgutil.iter_modules(ctrnet_ros.core.__path__))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
