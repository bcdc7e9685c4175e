"""Robot kinematics from a URDF (through yourdfpy), and the keypoint spec that names what the network sees.

``RobotModel`` loads a URDF from a string (as the ``robot_description`` topic/parameter carries it)
or from a file, resolves ``package://``, ``file://`` and relative mesh paths, and computes forward
kinematics for a joint-name -> position map. All poses are ``T_base_link`` (4, 4), metres, where
*base* is the keypoint spec's ``base_link`` (not necessarily the URDF's root link).

``KeypointSpec`` lists keypoints as (name, link, offset in the link frame), read from a robot YAML
such as ``config/robots/panda.yaml``; it is separate from any network config (as in DREAM).
"""

from __future__ import annotations

import io
import math
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import yaml

from . import se3

__all__ = [
    "RobotModelError",
    "MissingJointError",
    "UnknownLinkError",
    "InvalidJointValueError",
    "Keypoint",
    "KeypointSpec",
    "VisualMesh",
    "PackageResolver",
    "RobotModel",
    "config_dir",
]


class RobotModelError(ValueError):
    """The robot model or its inputs cannot be used."""


class MissingJointError(RobotModelError):
    """Joint positions lack a joint that the requested kinematics depend on."""

    def __init__(self, missing: Sequence[str]):
        self.missing = tuple(missing)
        super().__init__(f"joint state is missing joint(s) needed for forward kinematics: {', '.join(self.missing)}")


class UnknownLinkError(RobotModelError):
    """A link name that the URDF does not define."""


class InvalidJointValueError(RobotModelError):
    """A joint position that is NaN or infinite."""


def config_dir() -> Path:
    """Directory holding the package's config files (``robots/*.yaml``), source tree or installed."""
    here = Path(__file__).resolve().parent.parent.parent / "config"
    if here.is_dir():
        return here
    try:  # installed with colcon: share/ctrnet_ros/config
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("ctrnet_ros")) / "config"
    except Exception as exc:  # noqa: BLE001 - any failure means "not installed that way"
        raise FileNotFoundError("cannot locate ctrnet_ros/config (neither source tree nor ament index)") from exc


# --------------------------------------------------------------------------------------------
# Keypoint spec
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Keypoint:
    name: str  # what the network calls it, e.g. "panda_link0"
    link: str  # URDF link the point is attached to
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)  # metres, in the link frame


@dataclass(frozen=True)
class KeypointSpec:
    """The robot's keypoints, in network output order, and the frame they are expressed in."""

    robot: str  # a label for logs and model cards; never used to branch behaviour
    base_link: str  # frame in which keypoints, and the camera pose, are expressed
    keypoints: tuple[Keypoint, ...]
    urdf: str | None = None  # default URDF location (file path or package:// URL) if no robot_description

    @property
    def names(self) -> list[str]:
        return [k.name for k in self.keypoints]

    @property
    def links(self) -> list[str]:
        return [k.link for k in self.keypoints]

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def from_dict(cls, d: Mapping) -> "KeypointSpec":
        try:
            kps = []
            for i, k in enumerate(d["keypoints"]):
                off = tuple(float(x) for x in k.get("offset", (0.0, 0.0, 0.0)))
                if len(off) != 3 or not all(math.isfinite(x) for x in off):
                    raise RobotModelError(f"keypoint {i} ({k.get('name')}): offset must be 3 finite numbers")
                kps.append(Keypoint(name=str(k.get("name", k["link"])), link=str(k["link"]), offset=off))
            spec = cls(robot=str(d.get("robot", "robot")), base_link=str(d["base_link"]), keypoints=tuple(kps),
                       urdf=d.get("urdf"))
        except KeyError as exc:
            raise RobotModelError(f"keypoint spec is missing field {exc}") from exc
        if len(spec.keypoints) < 4:
            raise RobotModelError(f"a keypoint spec needs at least 4 keypoints for PnP, got {len(spec.keypoints)}")
        if len(set(spec.names)) != len(spec.names):
            raise RobotModelError(f"keypoint names must be unique: {spec.names}")
        return spec

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "KeypointSpec":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(yaml.safe_load(f))

    @classmethod
    def builtin(cls, robot: str) -> "KeypointSpec":
        """Spec shipped in ``config/robots/<robot>.yaml`` (e.g. ``"panda"``, ``"ur5"``)."""
        if not robot.replace("_", "").isalnum():
            raise RobotModelError(f"invalid robot config name {robot!r}")
        path = config_dir() / "robots" / f"{robot}.yaml"
        if not path.is_file():
            raise RobotModelError(f"no built-in robot config {path.name}")
        return cls.from_yaml(path)


# --------------------------------------------------------------------------------------------
# Mesh paths
# --------------------------------------------------------------------------------------------
class PackageResolver:
    """Resolves ``package://pkg/rel``, ``file://abs`` and relative mesh references to files.

    Search order for ``package://pkg``: explicit ``package_dirs``, the ament index (when
    ``ament_index_python`` imports), then ``<prefix>/share/pkg`` for every prefix in
    ``AMENT_PREFIX_PATH`` and the Python environment's ``cmeel.prefix`` (how PyPI robot-description
    packages such as example-robot-data install their share folder).
    """

    def __init__(self, *, package_dirs: Mapping[str, str | os.PathLike] | None = None,
                 base_dir: str | os.PathLike | None = None):
        self.package_dirs = {k: Path(v) for k, v in (package_dirs or {}).items()}
        self.base_dir = Path(base_dir) if base_dir is not None else None

    @staticmethod
    def _share_roots() -> list[Path]:
        roots = [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
        for key in ("purelib", "platlib"):
            roots.append(Path(sysconfig.get_paths()[key]) / "cmeel.prefix" / "share")
        return roots

    def package_dir(self, package: str) -> Path:
        if package in self.package_dirs:
            return self.package_dirs[package]
        try:
            from ament_index_python.packages import get_package_share_directory

            return Path(get_package_share_directory(package))
        except Exception:  # noqa: BLE001 - not installed, or package unknown to the index
            pass
        for root in self._share_roots():
            if (root / package).is_dir():
                return root / package
        raise RobotModelError(f"cannot resolve package://{package}: not in package_dirs, ament index, "
                              f"AMENT_PREFIX_PATH or cmeel.prefix")

    def resolve(self, ref: str) -> Path:
        if ref.startswith("package://"):
            pkg, _, rel = ref[len("package://"):].partition("/")
            return self.package_dir(pkg) / rel
        if ref.startswith("file://"):
            return Path(ref[len("file://"):])
        p = Path(ref)
        if not p.is_absolute() and self.base_dir is not None:
            p = self.base_dir / p
        return p


# --------------------------------------------------------------------------------------------
# Robot model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisualMesh:
    """One visual mesh of the URDF, attached to ``link``."""

    link: str
    T_link_mesh: np.ndarray  # (4, 4) mesh frame in link frame
    path: Path  # resolved mesh file
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgba: tuple[float, float, float, float] | None = None  # URDF material colour, if any


@dataclass(frozen=True)
class _ChainJoint:
    """A URDF joint as forward kinematics needs it (from yourdfpy's parse)."""
    parent: str  # parent link
    origin: np.ndarray  # (4, 4) T_parent_joint
    motion: str  # "revolute" (also continuous), "prismatic", or "none" (fixed; floating/planar as yourdfpy)
    axis: np.ndarray  # (3,) unit axis in the joint frame
    source: str  # the joint whose position drives it (itself, or the mimicked joint)
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass
class _JointInfo:
    name: str
    type: str
    lower: float
    upper: float
    mimic: str | None = None


class RobotModel:
    """URDF kinematics (parsed by yourdfpy). Thread-safe: forward kinematics keeps no state between calls.

    Args:
        urdf: the loaded ``yourdfpy.URDF``.
        base_link: frame in which all poses are returned; defaults to the URDF root.
        resolver: how mesh references were resolved.
    """

    def __init__(self, urdf, *, base_link: str | None = None, resolver: PackageResolver | None = None):
        self._urdf = urdf
        self.resolver = resolver or PackageResolver()
        self.link_names: list[str] = [l.name for l in urdf.robot.links]
        self.root_link: str = urdf.base_link
        self.base_link = base_link or self.root_link
        self._check_link(self.base_link)
        self.joints: dict[str, _JointInfo] = {}
        for j in urdf.robot.joints:
            lo = j.limit.lower if (j.limit is not None and j.limit.lower is not None) else -math.inf
            hi = j.limit.upper if (j.limit is not None and j.limit.upper is not None) else math.inf
            if j.type == "continuous":
                lo, hi = -math.inf, math.inf
            self.joints[j.name] = _JointInfo(j.name, j.type, float(lo), float(hi), j.mimic.joint if j.mimic else None)
        #: joints whose positions the model takes as input (excludes fixed and mimic joints)
        self.joint_names: list[str] = list(urdf.actuated_joint_names)
        self._parent_joint = {j.child: j for j in urdf.robot.joints}
        # link -> the joint placing it in its parent (the root has none), for forward kinematics
        self._fk_joints: dict[str, _ChainJoint] = {child: self._chain_joint(j) for child, j in self._parent_joint.items()}
        self._chains: dict[str, list[str]] = {}  # link -> chain_joints(link), filled on first use

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_urdf_string(cls, xml: str, *, base_link: str | None = None,
                         package_dirs: Mapping[str, str | os.PathLike] | None = None,
                         base_dir: str | os.PathLike | None = None) -> "RobotModel":
        """Load from URDF XML text, e.g. the ``robot_description`` parameter."""
        import yourdfpy

        if not isinstance(xml, str) or "<robot" not in xml:
            raise RobotModelError("robot description is not URDF XML (no <robot> element)")
        resolver = PackageResolver(package_dirs=package_dirs, base_dir=base_dir)
        try:
            urdf = yourdfpy.URDF.load(io.BytesIO(xml.encode("utf-8")), load_meshes=False, build_scene_graph=True,
                                      filename_handler=lambda ref: str(resolver.resolve(ref)))
        except Exception as exc:  # yourdfpy raises assorted types for malformed XML
            raise RobotModelError(f"cannot parse URDF: {exc}") from exc
        return cls(urdf, base_link=base_link, resolver=resolver)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, base_link: str | None = None,
                  package_dirs: Mapping[str, str | os.PathLike] | None = None) -> "RobotModel":
        """Load from a URDF file or a ``package://`` URL; relative mesh paths resolve against its folder."""
        path = PackageResolver(package_dirs=package_dirs).resolve(str(path))
        try:
            xml = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise RobotModelError(f"cannot read URDF {path}: {exc}") from exc
        return cls.from_urdf_string(xml, base_link=base_link, package_dirs=package_dirs, base_dir=Path(path).parent)

    @classmethod
    def from_spec(cls, spec: KeypointSpec, *, urdf_xml: str | None = None,
                  package_dirs: Mapping[str, str | os.PathLike] | None = None) -> "RobotModel":
        """Model for a keypoint spec, from ``urdf_xml`` if given, else from the spec's ``urdf`` entry."""
        if urdf_xml:
            model = cls.from_urdf_string(urdf_xml, base_link=spec.base_link, package_dirs=package_dirs)
        elif spec.urdf:
            model = cls.from_file(spec.urdf, base_link=spec.base_link, package_dirs=package_dirs)
        else:
            raise RobotModelError(f"keypoint spec for {spec.robot!r} names no URDF and no robot_description was given")
        for link in spec.links:
            model._check_link(link)
        return model

    # -- queries ------------------------------------------------------------------------------
    def _check_link(self, link: str) -> None:
        if link not in self.link_names:
            raise UnknownLinkError(f"link {link!r} is not in the URDF (links: {', '.join(self.link_names)})")

    def parent_link(self, link: str) -> str | None:
        """The link ``link`` hangs from in the URDF tree (None for the root)."""
        self._check_link(link)
        j = self._parent_joint.get(link)
        return None if j is None else j.parent

    def joint_limits(self, names: Iterable[str] | None = None) -> np.ndarray:
        """(J, 2) lower/upper limits (radians or metres) of ``names`` (default: :attr:`joint_names`)."""
        names = self.joint_names if names is None else list(names)
        return np.array([[self.joints[n].lower, self.joints[n].upper] for n in names])

    def chain_joints(self, link: str) -> list[str]:
        """Actuated joints between the URDF root and ``link`` (the ones its pose depends on)."""
        chain = self._chains.get(link)
        if chain is None:  # the URDF never changes: walk the tree once per link
            self._check_link(link)
            out, child = [], link
            while child in self._parent_joint:
                j = self._parent_joint[child]
                info = self.joints[j.name]
                if info.type != "fixed":
                    out.append(info.mimic or j.name)
                child = j.parent
            chain = self._chains[link] = out[::-1]
        return list(chain)

    def required_joints(self, links: Iterable[str]) -> list[str]:
        """Actuated joints needed to place every link in ``links`` relative to the base link."""
        need: list[str] = []
        for link in list(links) + [self.base_link]:
            for j in self.chain_joints(link):
                if j not in need:
                    need.append(j)
        return need

    def default_positions(self) -> dict[str, float]:
        """Zero for every actuated joint, clipped into its limits."""
        return {n: float(np.clip(0.0, self.joints[n].lower, self.joints[n].upper)) for n in self.joint_names}

    def visual_meshes(self) -> list[VisualMesh]:
        """Every visual mesh of the URDF, resolved to a file, in link order."""
        out = []
        for link in self._urdf.robot.links:
            for v in link.visuals:
                if v.geometry is None or v.geometry.mesh is None:
                    continue
                T = np.eye(4) if v.origin is None else np.asarray(v.origin, dtype=np.float64)
                scale = v.geometry.mesh.scale
                if scale is None:
                    scale = (1.0, 1.0, 1.0)
                elif np.isscalar(scale):
                    scale = (float(scale),) * 3
                rgba = None
                if v.material is not None and v.material.color is not None:
                    rgba = tuple(float(c) for c in v.material.color.rgba)
                out.append(VisualMesh(link=link.name, T_link_mesh=T,
                                      path=self.resolver.resolve(v.geometry.mesh.filename),
                                      scale=tuple(float(s) for s in scale), rgba=rgba))
        return out

    # -- forward kinematics -------------------------------------------------------------------
    def _configuration(self, positions: Mapping[str, float], required: Sequence[str]) -> dict[str, float]:
        missing = [n for n in required if n not in positions]
        if missing:
            raise MissingJointError(missing)
        cfg = self.default_positions()
        for name, value in positions.items():
            if name not in self.joints or self.joints[name].type == "fixed" or self.joints[name].mimic:
                continue  # extra joints (other robots on the same /joint_states) are ignored
            v = float(value)
            if not math.isfinite(v):
                raise InvalidJointValueError(f"joint {name!r} has a non-finite position ({value})")
            cfg[name] = v
        return cfg

    def link_poses(self, positions: Mapping[str, float], links: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``{link: T_base_link}`` (4, 4) for ``links`` (default: all links) at joint ``positions``.

        Args:
            positions: joint name -> position (radians / metres). Joints not on the requested links'
                chains may be omitted (they take :meth:`default_positions`); extra names are ignored.
        Raises:
            MissingJointError, InvalidJointValueError, UnknownLinkError.
        """
        links = self.link_names if links is None else list(links)
        for link in links:
            self._check_link(link)
        cfg = self._configuration(positions, self.required_joints(links))
        # The joint chains come from yourdfpy's parse; composing them here (a few 4x4 products per
        # link) is ~20x faster than yourdfpy's scene-graph update, and this runs on every frame.
        memo: dict[str, np.ndarray] = {}
        T_base_root = se3.invert_transform(self._root_transform(self.base_link, cfg, memo))
        return {l: T_base_root @ self._root_transform(l, cfg, memo) for l in links}

    @staticmethod
    def _chain_joint(j) -> _ChainJoint:
        """A yourdfpy joint as :meth:`_root_transform` needs it."""
        motion = {"revolute": "revolute", "continuous": "revolute", "prismatic": "prismatic"}.get(j.type, "none")
        axis = np.array([1.0, 0.0, 0.0]) if j.axis is None else np.asarray(j.axis, dtype=np.float64)
        norm = float(np.linalg.norm(axis))
        if motion != "none" and norm < 1e-12:
            raise RobotModelError(f"joint {j.name!r} has a zero-length axis")
        source, mult, off = j.name, 1.0, 0.0
        if j.mimic is not None:
            source = j.mimic.joint
            mult = 1.0 if j.mimic.multiplier is None else float(j.mimic.multiplier)
            off = 0.0 if j.mimic.offset is None else float(j.mimic.offset)
        return _ChainJoint(parent=j.parent, origin=np.eye(4) if j.origin is None else np.asarray(j.origin, dtype=np.float64),
                           motion=motion, axis=axis / max(norm, 1e-12), source=source, multiplier=mult, offset=off)

    def _root_transform(self, link: str, cfg: Mapping[str, float], memo: dict[str, np.ndarray]) -> np.ndarray:
        """T_root_link at joint positions ``cfg``; ``memo`` holds the links already placed in this call."""
        T = memo.get(link)
        if T is not None:
            return T
        j = self._fk_joints.get(link)
        if j is None:
            T = np.eye(4)
        else:
            T = self._root_transform(j.parent, cfg, memo) @ j.origin
            if j.motion != "none":
                q = j.multiplier * cfg.get(j.source, 0.0) + j.offset  # a mimicked joint that is not actuated: 0
                M = np.eye(4)
                if j.motion == "prismatic":
                    M[:3, 3] = q * j.axis
                else:
                    M[:3, :3] = se3.rvec_to_matrix(q * j.axis)
                T = T @ M
        memo[link] = T
        return T

    def keypoints_base(self, spec: KeypointSpec, positions: Mapping[str, float]) -> np.ndarray:
        """(K, 3) keypoint positions in the base frame, metres, in ``spec`` order."""
        if spec.base_link != self.base_link:
            raise RobotModelError(f"spec base link {spec.base_link!r} differs from model base link {self.base_link!r}")
        poses = self.link_poses(positions, links=sorted(set(spec.links)))
        return np.array([poses[k.link][:3, :3] @ np.asarray(k.offset) + poses[k.link][:3, 3] for k in spec.keypoints])

    def sample_configuration(self, rng: np.random.Generator, *, names: Sequence[str] | None = None,
                             margin: float = 0.0) -> dict[str, float]:
        """Uniform random joint positions within limits (shrunk by ``margin`` of the range on each side).

        Unbounded (continuous) joints are sampled in [-pi, pi].
        """
        names = self.joint_names if names is None else list(names)
        lim = self.joint_limits(names)
        lo = np.where(np.isfinite(lim[:, 0]), lim[:, 0], -math.pi)
        hi = np.where(np.isfinite(lim[:, 1]), lim[:, 1], math.pi)
        span = hi - lo
        q = rng.uniform(lo + margin * span, hi - margin * span)
        return dict(zip(names, q.tolist()))
