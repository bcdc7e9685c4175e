"""The saved calibration: ``ctrnet_calibration.yaml`` and a static-transform launch snippet beside it.

``~/save`` writes, into the ``save_directory`` parameter's folder (never a path from a message):

``ctrnet_calibration.yaml``
    The published transform ``T_parent_child`` (parent and child exactly as on TF, so an inverted
    publication is saved inverted), translation in metres, quaternion (x, y, z, w), the 6x6 pose
    covariance in ROS order (x, y, z, rotX, rotY, rotZ; metres, radians; parent frame), the number of
    fused frames, whether the fusion had converged, and the image stamp of the newest fused frame.
    The node's ``calibration_file`` parameter reads it back.

``ctrnet_static_tf.launch.py``
    ``ros2 launch ./ctrnet_static_tf.launch.py`` publishes the same transform with tf2_ros's
    ``static_transform_publisher``, without ctrnet_ros.

Both files are written atomically (a temporary file in the same folder, fsync, then rename), so a
reader never sees half a file and a failed save (disk full, no permission) leaves the old files.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..core import se3

__all__ = ["CALIBRATION_FILENAME", "LAUNCH_SNIPPET_FILENAME", "FORMAT", "SavedCalibration", "CalibrationFileError",
           "save_calibration", "load_calibration", "launch_snippet"]

CALIBRATION_FILENAME = "ctrnet_calibration.yaml"
LAUNCH_SNIPPET_FILENAME = "ctrnet_static_tf.launch.py"
FORMAT = "ctrnet_ros/calibration-1"


class CalibrationFileError(RuntimeError):
    """A calibration file that cannot be written or read; the message says which file and why."""


@dataclass(frozen=True)
class SavedCalibration:
    parent_frame: str
    child_frame: str
    T_parent_child: np.ndarray  # (4, 4) metres
    covariance: np.ndarray | None  # (6, 6) ROS order, parent frame; None if unknown
    frames: int  # frames fused into it (0 for a per-frame or loaded pose)
    converged: bool
    stamp_ns: int  # image stamp of the newest frame that contributed
    mode: str = "static"

    def to_dict(self) -> dict:
        t, q = se3.transform_to_translation_quat(self.T_parent_child)
        cov = None if self.covariance is None else [float(c) for c in np.asarray(self.covariance).reshape(-1)]
        return {
            "format": FORMAT,
            "parent_frame": self.parent_frame,
            "child_frame": self.child_frame,
            "translation": [float(v) for v in t],
            "rotation": [float(v) for v in q],
            "covariance": cov,
            "frames": int(self.frames),
            "converged": bool(self.converged),
            "mode": self.mode,
            "stamp": {"sec": int(self.stamp_ns // 1_000_000_000), "nanosec": int(self.stamp_ns % 1_000_000_000)},
        }


def launch_snippet(cal: SavedCalibration) -> str:
    """Python source of a launch file that publishes ``cal`` with tf2_ros's static_transform_publisher."""
    t, q = se3.transform_to_translation_quat(cal.T_parent_child)
    pairs = [(flag, f"{float(value):.17g}")
             for flag, value in zip(("--x", "--y", "--z", "--qx", "--qy", "--qz", "--qw"), list(t) + list(q))]
    pairs += [("--frame-id", cal.parent_frame), ("--child-frame-id", cal.child_frame)]
    # Frame ids can come from image headers: repr() makes every value an inert string literal in the code.
    arg_lines = ",\n".join(f"                {flag!r}, {value!r}" for flag, value in pairs)
    return f'''"""Static camera-to-robot transform saved by ctrnet_ros (ctrnet_node ~/save).

Run: ros2 launch ./{LAUNCH_SNIPPET_FILENAME}
"""
# {cal.parent_frame!r} -> {cal.child_frame!r}: {int(cal.frames)} fused frames, converged: {bool(cal.converged)}

from launch import LaunchDescription
from launch_ros.actions import Node


def generate_launch_description():
    return LaunchDescription([
        Node(
            package="tf2_ros",
            executable="static_transform_publisher",
            name="ctrnet_static_tf",
            arguments=[
{arg_lines},
            ],
        ),
    ])
'''


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_calibration(cal: SavedCalibration, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write both files into ``directory`` (created if missing). Returns (yaml path, launch path).

    Raises:
        CalibrationFileError: the folder cannot be created or a file cannot be written (reason included).
    """
    directory = Path(directory)
    yaml_path, launch_path = directory / CALIBRATION_FILENAME, directory / LAUNCH_SNIPPET_FILENAME
    header = ("# Camera-to-robot calibration saved by ctrnet_ros. T_parent_child: pose of child_frame in\n"
              "# parent_frame; translation in metres, rotation as a quaternion (x, y, z, w); covariance 6x6\n"
              "# row-major (x, y, z, rotX, rotY, rotZ) in parent_frame; stamp: newest fused image.\n")
    body = yaml.safe_dump(cal.to_dict(), sort_keys=False, default_flow_style=None, width=1000)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(yaml_path, header + body)
        _atomic_write(launch_path, launch_snippet(cal))
    except OSError as exc:
        raise CalibrationFileError(f"cannot write the calibration into {directory}: "
                                   f"{exc.strerror or exc} (errno {exc.errno})") from exc
    return yaml_path, launch_path


def _vector(d: dict, key: str, n: int, path) -> list[float]:
    v = d.get(key)
    if not isinstance(v, (list, tuple)) or len(v) != n:
        raise CalibrationFileError(f"{path}: '{key}' must be a list of {n} numbers, got {v!r}")
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError) as exc:
        raise CalibrationFileError(f"{path}: '{key}' must be a list of {n} numbers, got {v!r}") from exc
    if not all(math.isfinite(x) for x in out):
        raise CalibrationFileError(f"{path}: '{key}' must be finite, got {v!r}")
    return out


def load_calibration(path: str | os.PathLike) -> SavedCalibration:
    """Read a file written by :func:`save_calibration`. Raises :class:`CalibrationFileError` naming the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CalibrationFileError(f"cannot read calibration file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise CalibrationFileError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CalibrationFileError(f"{path}: expected a mapping, got {type(data).__name__}")
    for key in ("parent_frame", "child_frame"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise CalibrationFileError(f"{path}: '{key}' must be a non-empty string")
    t = _vector(data, "translation", 3, path)
    q = np.asarray(_vector(data, "rotation", 4, path))
    if abs(np.linalg.norm(q) - 1.0) > 1e-3:
        raise CalibrationFileError(f"{path}: 'rotation' {q.tolist()} is not a unit quaternion (x, y, z, w)")
    cov = None
    if data.get("covariance") is not None:
        cov = np.asarray(_vector(data, "covariance", 36, path)).reshape(6, 6)
    stamp = data.get("stamp") or {}
    try:
        stamp_ns = int(stamp.get("sec", 0)) * 1_000_000_000 + int(stamp.get("nanosec", 0))
    except (AttributeError, TypeError, ValueError) as exc:
        raise CalibrationFileError(f"{path}: 'stamp' must be {{sec: int, nanosec: int}}, got {stamp!r}") from exc
    return SavedCalibration(parent_frame=data["parent_frame"], child_frame=data["child_frame"],
                            T_parent_child=se3.transform_from_translation_quat(t, q / np.linalg.norm(q)),
                            covariance=cov, frames=int(data.get("frames", 0) or 0),
                            converged=bool(data.get("converged", False)), stamp_ns=stamp_ns,
                            mode=str(data.get("mode", "static")))
