"""Ground-truth camera pose of a recording, as a YAML file that evaluation reads.

The file stores the camera *optical frame's pose in the robot base frame*, i.e. ``T_base_camera``
(``T_parent_child`` with parent = base, child = camera). This is the inverse of the
``T_camera_base`` a :class:`~ctrnet_ros.sim.frame.Renderer` takes.

Piecewise-constant in time, to describe a camera that is bumped during a recording::

    parent_frame: panda_link0
    child_frame: camera_color_optical_frame
    segments:
      - start: 0.0      # seconds since the first message in the bag, inclusive
        end: .inf       # exclusive
        translation: [x, y, z]        # metres: camera optical-frame origin in parent_frame
        rotation: [qx, qy, qz, qw]    # orientation of the camera optical frame in parent_frame

Segments are ordered by time and do not overlap; gaps between them are allowed and mean "pose
unknown" (e.g. while the camera was being moved), for which :meth:`GroundTruth.segment_at`
returns ``None``. Times are seconds relative to the first message in the bag, computed as
``(stamp_ns - first_stamp_ns) / 1e9``; floats are written with ``repr`` so they round-trip exactly.
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from ..core import se3

__all__ = [
    "GroundTruthError",
    "GroundTruthSegment",
    "GroundTruth",
    "QUATERNION_NORM_TOLERANCE",
]

#: How far from 1 a stored quaternion's norm may be before the file is rejected (it is then normalised).
QUATERNION_NORM_TOLERANCE = 1e-3

_TOP_KEYS = ("parent_frame", "child_frame", "segments")
_SEGMENT_KEYS = ("start", "end", "translation", "rotation")


class GroundTruthError(ValueError):
    """A ground-truth file or object that is malformed (missing keys, bad quaternion, overlapping segments)."""


def _finite_vector(values: Any, n: int, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise GroundTruthError(f"{what} must be a list of {n} numbers, got {values!r}") from exc
    if len(out) != n:
        raise GroundTruthError(f"{what} must have {n} entries, got {len(out)}: {values!r}")
    if not all(math.isfinite(v) for v in out):
        raise GroundTruthError(f"{what} must be finite, got {values!r}")
    return out


def _time(value: Any, what: str) -> float:
    if isinstance(value, bool):  # bool is an int subclass; "start: true" is a typo, not 1.0
        raise GroundTruthError(f"{what} must be a number of seconds, got {value!r}")
    try:
        t = float(value)
    except (TypeError, ValueError) as exc:
        raise GroundTruthError(f"{what} must be a number of seconds, got {value!r}") from exc
    if math.isnan(t):
        raise GroundTruthError(f"{what} is NaN")
    return t


@dataclass(frozen=True)
class GroundTruthSegment:
    """A time interval ``[start, end)`` (seconds since the bag's first message) with a constant camera pose.

    Attributes:
        start: inclusive start, seconds; finite.
        end: exclusive end, seconds; ``> start``, may be ``math.inf``.
        translation: (3,) metres, camera optical-frame origin in the parent frame.
        rotation: (4,) unit quaternion (x, y, z, w), camera optical-frame orientation in the parent frame.
    """

    start: float
    end: float
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]

    def __post_init__(self):
        start = _time(self.start, "segment start")
        end = _time(self.end, "segment end")
        if not math.isfinite(start):
            raise GroundTruthError(f"segment start must be finite, got {start}")
        if end == -math.inf or not end > start:
            raise GroundTruthError(f"segment end ({end}) must be greater than its start ({start})")
        translation = _finite_vector(self.translation, 3, "segment translation")
        q = np.asarray(_finite_vector(self.rotation, 4, "segment rotation"))
        norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            raise GroundTruthError(
                f"segment rotation {q.tolist()} is not a unit quaternion (x, y, z, w): norm {norm:.6f}, "
                f"tolerance {QUATERNION_NORM_TOLERANCE}"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "translation", translation)
        if abs(norm - 1.0) > 1e-12:  # renormalise hand-written values; leave unit ones bit-exact for round trips
            q = q / norm
        object.__setattr__(self, "rotation", tuple(float(v) for v in q))

    @classmethod
    def from_transform(cls, start: float, end: float, T_parent_child) -> "GroundTruthSegment":
        """Segment from a (4, 4) ``T_parent_child`` (= ``T_base_camera``), metres."""
        t, q = se3.transform_to_translation_quat(T_parent_child)
        return cls(start=start, end=end, translation=tuple(t.tolist()), rotation=tuple(q.tolist()))

    @property
    def T_parent_child(self) -> np.ndarray:
        """(4, 4) camera optical frame -> parent (base) frame, i.e. ``T_base_camera``, metres."""
        return se3.transform_from_translation_quat(self.translation, self.rotation)

    def contains(self, t_rel: float) -> bool:
        """Whether ``start <= t_rel < end`` (seconds since the bag's first message)."""
        return self.start <= t_rel < self.end

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "translation": list(self.translation),
                "rotation": list(self.rotation)}


@dataclass(frozen=True)
class GroundTruth:
    """Piecewise-constant ``T_parent_child`` (camera pose in the robot base frame) over a recording.

    Attributes:
        parent_frame: the robot base frame, e.g. ``panda_link0``.
        child_frame: the camera optical frame, e.g. ``camera_color_optical_frame``.
        segments: ordered, non-overlapping time segments (at least one).
    """

    parent_frame: str
    child_frame: str
    segments: tuple[GroundTruthSegment, ...]

    def __post_init__(self):
        for name in ("parent_frame", "child_frame"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise GroundTruthError(f"{name} must be a non-empty string, got {value!r}")
        if self.parent_frame == self.child_frame:
            raise GroundTruthError(f"parent_frame and child_frame are both {self.parent_frame!r}")
        segments = tuple(self.segments)
        if not segments:
            raise GroundTruthError("ground truth needs at least one segment")
        for i, seg in enumerate(segments):
            if not isinstance(seg, GroundTruthSegment):
                raise GroundTruthError(f"segment {i} is a {type(seg).__name__}, not a GroundTruthSegment")
        for i, (a, b) in enumerate(zip(segments, segments[1:])):
            if b.start < a.end:
                raise GroundTruthError(
                    f"segments {i} [{a.start}, {a.end}) and {i + 1} [{b.start}, {b.end}) overlap or are out of "
                    f"order: each segment must start at or after the previous one ends"
                )
        object.__setattr__(self, "segments", segments)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def constant(cls, T_parent_child, *, parent_frame: str, child_frame: str) -> "GroundTruth":
        """One segment ``[0, inf)`` with the (4, 4) ``T_parent_child`` (= ``T_base_camera``)."""
        return cls(parent_frame=parent_frame, child_frame=child_frame,
                   segments=(GroundTruthSegment.from_transform(0.0, math.inf, T_parent_child),))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GroundTruth":
        """From the parsed YAML mapping. Raises :class:`GroundTruthError` naming the offending field."""
        if not isinstance(d, Mapping):
            raise GroundTruthError(f"ground truth must be a mapping with keys {list(_TOP_KEYS)}, got {type(d).__name__}")
        missing = [k for k in _TOP_KEYS if k not in d]
        unknown = sorted(set(d) - set(_TOP_KEYS), key=str)
        if missing or unknown:
            raise GroundTruthError(f"ground truth keys: missing {missing}, unknown {unknown}; expected {list(_TOP_KEYS)}")
        raw_segments = d["segments"]
        if not isinstance(raw_segments, Sequence) or isinstance(raw_segments, str):
            raise GroundTruthError(f"'segments' must be a list, got {type(raw_segments).__name__}")
        segments = []
        for i, s in enumerate(raw_segments):
            if not isinstance(s, Mapping):
                raise GroundTruthError(f"segment {i} must be a mapping with keys {list(_SEGMENT_KEYS)}")
            missing = [k for k in _SEGMENT_KEYS if k not in s]
            unknown = sorted(set(s) - set(_SEGMENT_KEYS), key=str)
            if missing or unknown:
                raise GroundTruthError(f"segment {i} keys: missing {missing}, unknown {unknown}; "
                                       f"expected {list(_SEGMENT_KEYS)}")
            try:
                segments.append(GroundTruthSegment(start=s["start"], end=s["end"], translation=s["translation"],
                                                   rotation=s["rotation"]))
            except GroundTruthError as exc:
                raise GroundTruthError(f"segment {i}: {exc}") from exc
        return cls(parent_frame=d["parent_frame"], child_frame=d["child_frame"], segments=tuple(segments))

    def to_dict(self) -> dict[str, Any]:
        return {"parent_frame": self.parent_frame, "child_frame": self.child_frame,
                "segments": [s.to_dict() for s in self.segments]}

    # -- files --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "GroundTruth":
        """Read and validate a ground-truth YAML file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise GroundTruthError(f"cannot read ground truth {path}: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise GroundTruthError(f"{path} is not valid YAML: {exc}") from exc
        try:
            return cls.from_dict(data)
        except GroundTruthError as exc:
            raise GroundTruthError(f"{path}: {exc}") from exc

    def dumps(self) -> str:
        """The YAML text :meth:`save` writes (block style, vectors in flow style, ``.inf`` for open ends)."""
        body = yaml.dump(self.to_dict(), Dumper=_IndentedSafeDumper, sort_keys=False, default_flow_style=None,
                         allow_unicode=True, width=1000)
        header = ("# Ground-truth camera pose: T_parent_child = pose of child_frame (camera optical frame) in\n"
                  "# parent_frame (robot base). Segment times are seconds since the first message in the bag,\n"
                  "# [start, end); translation in metres, rotation as a unit quaternion (x, y, z, w).\n")
        return header + body

    def save(self, path: str | os.PathLike) -> Path:
        """Write the YAML file (parent folders must exist). Returns the path."""
        path = Path(path)
        path.write_text(self.dumps(), encoding="utf-8")
        return path

    # -- queries ------------------------------------------------------------------------------
    def segment_at(self, t_rel: float) -> GroundTruthSegment | None:
        """The segment with ``start <= t_rel < end`` (seconds since the first message), or ``None``."""
        t = float(t_rel)
        if math.isnan(t):
            return None
        i = bisect.bisect_right([s.start for s in self.segments], t) - 1
        if i >= 0 and self.segments[i].contains(t):
            return self.segments[i]
        return None

    def T_parent_child_at(self, t_rel: float) -> np.ndarray | None:
        """(4, 4) ``T_base_camera`` at ``t_rel`` seconds since the first message, or ``None`` if unknown."""
        seg = self.segment_at(t_rel)
        return None if seg is None else seg.T_parent_child


class _IndentedSafeDumper(yaml.SafeDumper):
    """SafeDumper that indents list items under their key (``segments:\\n  - start: ...``)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)
