"""The synthetic scene: robot meshes converted from the URDF, the room around it, and its appearance.

Three things live here, none of which touch OpenGL:

* **Mesh conversion.** :func:`load_mesh_parts` turns one URDF visual mesh file (COLLADA, STL, OBJ, ...)
  into :class:`MeshPart` s, one per material colour, through trimesh (and pycollada for ``.dae``).
  Results are cached on disk as ``.npz`` keyed by a SHA-256 of the file's bytes, the scale, the
  fallback colour, the decimation ratio and the converter version, so the (slow) COLLADA parse runs
  once per mesh file.
* **Appearance.** :class:`SceneAppearance` and its parts describe everything the domain randomiser
  may change between frames (lights, colours, textures, distractors) as plain data; ``render.py``
  applies it to the compiled model, ``randomize.py`` samples it.
* **Model building.** :func:`build_scene_model` assembles a MuJoCo model (through ``MjSpec``) with
  one mocap body per robot link, a floor, four walls and a ceiling, a pool of distractor geoms and
  light slots, and returns it with a :class:`SceneIndex` that maps model ids back to links.

Frames: the MuJoCo world frame *is* the keypoint spec's base frame (``T_world_base = I``), so link
poses from :meth:`RobotModel.link_poses` are used as mocap poses unchanged. Units are metres.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core import se3
from ..core.robot import KeypointSpec, RobotModel, VisualMesh
from ..core.silhouette import SilhouetteMesh

__all__ = [
    "MESH_CONVERTER_VERSION",
    "DISTRACTOR_SHAPES",
    "GEOM_GROUP_ROBOT",
    "GEOM_GROUP_ROOM",
    "GEOM_GROUP_DISTRACTOR",
    "GEOM_GROUP_MARKER",
    "MeshPart",
    "LightSpec",
    "SurfaceSpec",
    "DistractorSpec",
    "SceneAppearance",
    "SceneIndex",
    "import_mujoco",
    "default_cache_dir",
    "load_mesh_parts",
    "robot_link_meshes",
    "load_silhouette_mesh",
    "build_scene_model",
]

_LOG = logging.getLogger(__name__)

#: Bump when the conversion below changes what it writes; old cache entries are then ignored.
MESH_CONVERTER_VERSION = 1
#: Primitive shapes a distractor may take (MuJoCo geom types of the same name).
DISTRACTOR_SHAPES = ("box", "sphere", "capsule", "cylinder", "ellipsoid")
#: Colour of mesh parts that define none, when the URDF gives no material either (RGBA, 0..1).
_DEFAULT_RGBA = (0.7, 0.7, 0.7, 1.0)
#: Room boxes, in the order of SceneIndex.wall_geoms / wall_mocap.
_WALL_NAMES = ("wall_px", "wall_nx", "wall_py", "wall_ny", "ceiling")

# MuJoCo geom groups; a render pass shows a subset of them (mjvOption.geomgroup).
GEOM_GROUP_ROBOT = 0
GEOM_GROUP_ROOM = 1
GEOM_GROUP_DISTRACTOR = 2
GEOM_GROUP_MARKER = 5


def import_mujoco():
    """Import and return ``mujoco`` with an offscreen OpenGL backend selected.

    MuJoCo picks its GL backend from ``MUJOCO_GL`` when it is first imported; unset, it would try
    GLFW, which needs a display. We default it to ``egl`` (works here with Mesa's llvmpipe, nothing
    to install); set ``MUJOCO_GL=osmesa`` (``apt-get install libosmesa6``) where EGL is missing.
    Every module of ``ctrnet_ros.sim`` imports mujoco through this function.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco

    return mujoco


# --------------------------------------------------------------------------------------------
# Mesh conversion and its cache
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MeshPart:
    """A triangle mesh of one colour, in the mesh file's frame after the URDF scale is applied.

    Attributes:
        vertices: (N, 3) float32, metres.
        faces: (M, 3) int32 vertex indices, counter-clockwise seen from outside.
        normals: (N, 3) float32 unit vertex normals from the file, or (0, 3) to let MuJoCo compute
            them (after simplification).
        rgba: (4,) float64 colour in 0..1.
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    rgba: np.ndarray


def default_cache_dir() -> Path:
    """Where converted meshes are cached when no directory is given.

    ``$CTRNET_SIM_CACHE`` if set; else ``build/sim_cache`` in the source tree when running from
    one; else ``<tmp>/ctrnet_ros_sim_cache`` (never the home folder).
    """
    env = os.environ.get("CTRNET_SIM_CACHE")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "package.xml").is_file() or (repo / ".git").exists():
        return repo / "build" / "sim_cache"
    return Path(tempfile.gettempdir()) / "ctrnet_ros_sim_cache"


def _mesh_cache_key(path: Path, scale: Sequence[float], fallback_rgba: Sequence[float], reduction: float) -> str:
    h = hashlib.sha256()
    h.update(f"ctrnet_ros mesh v{MESH_CONVERTER_VERSION} reduction={reduction:.6f}\n".encode())
    h.update(np.asarray(scale, dtype=np.float64).tobytes())
    h.update(np.asarray(fallback_rgba, dtype=np.float64).tobytes())
    h.update(path.read_bytes())
    return h.hexdigest()[:32]


def _geometry_face_colors(geom, fallback_rgba: np.ndarray) -> np.ndarray:
    """(M, 4) float RGBA per face of a trimesh.Trimesh, from its material or colour visuals."""
    n = len(geom.faces)
    vis = geom.visual
    kind = getattr(vis, "kind", None)
    if kind == "texture" and getattr(vis, "material", None) is not None:
        # One material per geometry (a COLLADA <instance_material>); a texture image, if any,
        # is reduced to its mean colour by trimesh's ``main_color``.
        rgba = np.asarray(vis.material.main_color, dtype=np.float64) / 255.0
        return np.broadcast_to(rgba, (n, 4))
    if kind == "face":
        return np.asarray(vis.face_colors, dtype=np.float64) / 255.0
    if kind == "vertex":
        vc = np.asarray(vis.vertex_colors, dtype=np.float64) / 255.0
        return vc[geom.faces].mean(axis=1)
    return np.broadcast_to(fallback_rgba, (n, 4))


def _convert_mesh_file(path: Path, scale: Sequence[float], fallback_rgba: Sequence[float]) -> list[MeshPart]:
    """Load a mesh file with trimesh and split it into one :class:`MeshPart` per colour."""
    import trimesh

    scene = trimesh.load(str(path), force="scene", process=False)
    fallback = np.asarray(fallback_rgba, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    groups: dict[tuple, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for node in scene.graph.nodes_geometry:
        T_file_geom, geom_name = scene.graph[node]
        geom = scene.geometry[geom_name]
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            continue  # point clouds, paths
        verts = se3.transform_points(T_file_geom, geom.vertices) * scale
        # Normals rotate with the node transform; a scale with a sign flip mirrors them.
        normals = np.asarray(geom.vertex_normals, dtype=np.float64) @ T_file_geom[:3, :3].T
        normals = normals / scale
        faces = np.asarray(geom.faces, dtype=np.int64)
        if np.prod(np.sign(scale)) < 0:
            faces = faces[:, ::-1]
        colors = _geometry_face_colors(geom, fallback)
        keys = np.round(colors * 255.0).astype(np.int64)
        for key in np.unique(keys, axis=0):
            sel = np.all(keys == key, axis=1)
            groups.setdefault(tuple(key.tolist()), []).append((verts, normals, faces[sel]))
    parts = []
    for key, pieces in sorted(groups.items()):
        vs, ns, fs, offset = [], [], [], 0
        for verts, normals, faces in pieces:
            used = np.unique(faces)
            remap = np.full(len(verts), -1, dtype=np.int64)
            remap[used] = np.arange(len(used)) + offset
            vs.append(verts[used])
            ns.append(normals[used])
            fs.append(remap[faces])
            offset += len(used)
        v = np.concatenate(vs).astype(np.float32)
        f = np.concatenate(fs)
        nrm = np.concatenate(ns)
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
        # Drop degenerate triangles: MuJoCo rejects zero-area faces in some checks.
        tri = v[f].astype(np.float64)
        area2 = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        f = f[area2 > 1e-14]
        if len(f) == 0:
            continue
        parts.append(MeshPart(vertices=v, faces=f.astype(np.int32), normals=nrm.astype(np.float32),
                              rgba=np.asarray(key, dtype=np.float64) / 255.0))
    if not parts:
        raise ValueError(f"mesh file {path} contains no triangles")
    return parts


def _simplify_part(part: MeshPart, reduction: float) -> MeshPart:
    """Decimate a part by ``reduction`` (fraction of faces removed) with fast-simplification.

    Corners are welded first (COLLADA stores one vertex per face corner), so the file's normals
    are dropped and MuJoCo recomputes them.
    """
    import fast_simplification
    import trimesh

    mesh = trimesh.Trimesh(part.vertices.astype(np.float64), part.faces, process=False)
    mesh.merge_vertices()
    if len(mesh.faces) < 64:  # tiny parts (screws, logos) are not worth it
        verts, faces = mesh.vertices, mesh.faces
    else:
        verts, faces = fast_simplification.simplify(mesh.vertices.astype(np.float32), mesh.faces.astype(np.int32),
                                                    target_reduction=float(reduction))
    return MeshPart(vertices=np.asarray(verts, dtype=np.float32), faces=np.asarray(faces, dtype=np.int32),
                    normals=np.zeros((0, 3), dtype=np.float32), rgba=part.rgba)


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_mesh_parts(path: str | os.PathLike, *, scale: Sequence[float] = (1.0, 1.0, 1.0),
                    fallback_rgba: Sequence[float] | None = None, reduction: float = 0.0,
                    cache_dir: str | os.PathLike | None = None) -> list[MeshPart]:
    """One visual mesh file as :class:`MeshPart` s split by colour, converted once and cached.

    Args:
        path: mesh file (anything trimesh reads; ``.dae`` needs pycollada).
        scale: (3,) URDF ``<mesh scale>``, applied in the file's frame.
        fallback_rgba: colour for parts whose file defines none (the URDF ``<material>``), 0..1.
        reduction: fraction of triangles to remove by edge-collapse decimation (0 keeps the file's
            mesh; 0.75 leaves a quarter, sub-millimetre changes on the Panda, about 2x faster renders).
        cache_dir: cache root (default :func:`default_cache_dir`); entries go to ``meshes/<hash>.npz``.
    """
    path = Path(path)
    if not 0.0 <= reduction < 1.0:
        raise ValueError(f"mesh reduction must be in [0, 1), got {reduction}")
    fallback = tuple(_DEFAULT_RGBA if fallback_rgba is None else fallback_rgba)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entry = root / "meshes" / f"{_mesh_cache_key(path, scale, fallback, reduction)}.npz"
    if entry.is_file():
        try:
            with np.load(entry) as z:
                n = int(z["num_parts"])
                return [MeshPart(vertices=z[f"v{i}"], faces=z[f"f{i}"], normals=z[f"n{i}"], rgba=z[f"c{i}"])
                        for i in range(n)]
        except (OSError, KeyError, ValueError) as exc:  # a truncated or foreign file: convert again
            _LOG.warning("ignoring unreadable mesh cache entry %s (%s)", entry, exc)
    _LOG.info("converting %s (cached as %s)", path, entry.name)
    parts = _convert_mesh_file(path, scale, fallback)
    if reduction > 0.0:
        parts = [_simplify_part(p, reduction) for p in parts]
    arrays: dict[str, np.ndarray] = {"num_parts": np.array(len(parts))}
    for i, p in enumerate(parts):
        arrays.update({f"v{i}": p.vertices, f"f{i}": p.faces, f"n{i}": p.normals, f"c{i}": p.rgba})
    _write_npz_atomic(entry, arrays)
    return parts


def robot_link_meshes(robot: RobotModel, *, max_faces: int = 5000, links: Sequence[str] | None = None,
                      cache_dir: str | os.PathLike | None = None) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """The robot's visual meshes, decimated to about ``max_faces`` triangles in all, per link.

    Every mesh file is decimated by the same fraction through :func:`load_mesh_parts` (cached on
    disk under ``cache_dir``), so each link keeps its share of the detail; parts under 64 triangles
    are kept as they are, so the total may end slightly above ``max_faces``.

    Args:
        robot: URDF model; its visual meshes with ``T_link_mesh`` and scale are used.
        max_faces: target number of triangles over all links.
        links: links to include, in this order (default: every link with a visual mesh, in URDF order).
        cache_dir: mesh conversion cache (default :func:`default_cache_dir`).
    Returns:
        ``{link: [(vertices (N, 3) float64 metres in the link frame, faces (M, 3) int), ...]}``.
    Raises:
        ValueError: no visual meshes, a requested link without any, or ``max_faces`` < 1.
    """
    if int(max_faces) < 1:
        raise ValueError(f"max_faces must be positive, got {max_faces}")
    visuals = robot.visual_meshes()
    with_mesh = [l for l in robot.link_names if any(vm.link == l for vm in visuals)]
    if links is None:
        links = with_mesh
    else:
        links = list(links)
        missing = [l for l in links if l not in with_mesh]
        if missing:
            raise ValueError(f"link(s) without visual meshes: {', '.join(missing)} "
                             f"(links with meshes: {', '.join(with_mesh)})")
    if not links:
        raise ValueError("the URDF has no visual meshes to render")
    visuals = [vm for vm in visuals if vm.link in links]

    def load(reduction: float):
        return [load_mesh_parts(vm.path, scale=vm.scale, fallback_rgba=vm.rgba, reduction=reduction,
                                cache_dir=cache_dir) for vm in visuals]

    parts = load(0.0)
    total = sum(len(p.faces) for ps in parts for p in ps)
    if total > max_faces:
        # Round the fraction so that nearby targets share cache entries.
        reduction = round(min(1.0 - max_faces / total, 0.999), 4)
        parts = load(reduction)
    meshes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {l: [] for l in links}
    for vm, ps in zip(visuals, parts):
        R, t = vm.T_link_mesh[:3, :3], vm.T_link_mesh[:3, 3]
        for p in ps:
            meshes[vm.link].append((p.vertices.astype(np.float64) @ R.T + t, p.faces))
    return meshes


def load_silhouette_mesh(robot: RobotModel, *, max_faces: int = 5000,
                         cache_dir: str | os.PathLike | None = None) -> SilhouetteMesh:
    """:class:`~ctrnet_ros.core.silhouette.SilhouetteMesh` of every link with a visual mesh (see :func:`robot_link_meshes`)."""
    return SilhouetteMesh.from_link_meshes(robot_link_meshes(robot, max_faces=max_faces, cache_dir=cache_dir))


# --------------------------------------------------------------------------------------------
# Appearance: what the randomiser may change per frame
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LightSpec:
    """One light. Positions and directions are in the world (= robot base) frame, metres."""

    pos: np.ndarray  # (3,) position; ignored for direction by directional lights but used for shadows
    direction: np.ndarray  # (3,) unit vector the light shines along
    diffuse: np.ndarray  # (3,) linear RGB intensity, typically 0..1
    specular: np.ndarray  # (3,) linear RGB intensity of highlights
    directional: bool = True  # True: sun-like; False: spot light at ``pos``
    cast_shadow: bool = False  # render a shadow map for this light (expensive on CPU)
    cutoff_deg: float = 60.0  # spot cone half-angle, degrees (spot lights only)
    exponent: float = 2.0  # spot intensity fall-off inside the cone (spot lights only)


@dataclass(frozen=True, eq=False)
class SurfaceSpec:
    """Material of a room surface (floor, walls/ceiling) or of the distractors."""

    rgba: np.ndarray  # (4,) colour multiplying the texture, 0..1
    texture: np.ndarray | None = None  # (S, S, 3) uint8 RGB image, or None for a plain colour
    texrepeat: tuple[float, float] = (1.0, 1.0)  # texture repeats per metre (floor/walls) or per object
    specular: float = 0.2  # 0..1
    shininess: float = 0.2  # 0..1
    reflectance: float = 0.0  # 0..1; > 0 on the floor costs a second render pass


@dataclass(frozen=True, eq=False)
class DistractorSpec:
    """A primitive object placed in the scene (distractor or occluder)."""

    shape: str  # one of DISTRACTOR_SHAPES
    size: np.ndarray  # (3,) MuJoCo geom size (half-extents for box; radius[, half-length] otherwise), metres
    pos: np.ndarray  # (3,) centre in the world frame, metres
    quat_xyzw: np.ndarray  # (4,) orientation in the world frame
    rgba: np.ndarray  # (4,) colour, 0..1


@dataclass(frozen=True, eq=False)
class SceneAppearance:
    """Everything about the scene that is not the robot's pose or the camera.

    Robot colours are per *colour class*: the distinct colours of the URDF's meshes, in the order
    of :attr:`SceneIndex.robot_base_rgba`.
    """

    lights: tuple[LightSpec, ...]  # at most SceneIndex.num_light_slots
    ambient: np.ndarray  # (3,) global ambient light, linear RGB
    robot_rgba: np.ndarray | None = None  # (C, 4) colours per colour class; None keeps the URDF's
    robot_specular: float = 0.5  # 0..1
    robot_shininess: float = 0.5  # 0..1
    robot_reflectance: float = 0.0  # 0..1
    floor: SurfaceSpec | None = None  # None hides the floor
    walls: SurfaceSpec | None = None  # None hides walls and ceiling (then ``background`` shows, or black)
    room_half_extent: float = 4.0  # walls stand at x, y = +-this, metres
    room_height: float = 3.0  # ceiling height above the floor, metres
    background: np.ndarray | None = None  # (S, S, 3) uint8 image stretched behind everything when walls is None
    distractor_surface: SurfaceSpec | None = None  # shared texture/specular of distractors (rgba per object)
    distractors: tuple[DistractorSpec, ...] = ()  # at most SceneIndex.num_distractor_slots

    @classmethod
    def neutral(cls) -> "SceneAppearance":
        """A plain, evenly lit grey room with the URDF's colours: the deterministic default."""
        key = LightSpec(pos=np.array([1.0, 1.0, 3.0]), direction=_unit([-0.3, -0.3, -1.0]),
                        diffuse=np.full(3, 0.7), specular=np.full(3, 0.3))
        fill = LightSpec(pos=np.array([-2.0, 1.0, 2.0]), direction=_unit([0.6, -0.2, -0.4]),
                         diffuse=np.full(3, 0.3), specular=np.zeros(3))
        return cls(lights=(key, fill), ambient=np.full(3, 0.25),
                   floor=SurfaceSpec(rgba=np.array([0.55, 0.55, 0.55, 1.0])),
                   walls=SurfaceSpec(rgba=np.array([0.75, 0.75, 0.75, 1.0])))


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------------------------
# MuJoCo model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SceneIndex:
    """Ids in the compiled model that the renderer needs, and how geoms map to robot links.

    Attributes:
        link_names: links that carry visual geometry; label ``i`` in a segmentation means ``link_names[i]``.
        body_links: links that have a mocap body (visual links, then keypoint links without visuals).
        link_mocap: (B,) mocap index of each of ``body_links``.
        geom_label: (ngeom,) int16: link label for robot geoms, -1 for everything else.
        robot_geoms: (G,) robot geom ids.
        robot_materials: (C,) material id per robot colour class.
        robot_base_rgba: (C, 4) the URDF's colour of each class, 0..1.
        floor_geom, wall_geoms, wall_mocap, floor/wall material and texture: ids of the room; the
            walls (+x, -x, +y, -y, ceiling) are boxes in mocap bodies.
        distractor_geoms, distractor_mocap, distractor_material: (D,) ids of the distractor pool (one mocap
            body and one material each); distractor_texture: their shared texture.
        light_ids: (L,) light slots.
        marker_geoms: (K,) one tiny sphere per keypoint (group GEOM_GROUP_MARKER, hidden by default).
        keypoint_link_label: (K,) label of the visual link each keypoint belongs to (its own link, or
            the nearest ancestor with visual geometry), -1 if none.
        link_neighbours: (L, L) bool: links adjacent in the kinematic tree (links without visuals
            collapsed into their parent), including each link itself.
        texture_size: side of every procedural texture, pixels.
        floor_z: floor height in the world frame, metres.
    """

    link_names: list[str]
    body_links: list[str]
    link_mocap: np.ndarray
    geom_label: np.ndarray
    robot_geoms: np.ndarray
    robot_materials: np.ndarray
    robot_base_rgba: np.ndarray
    floor_geom: int
    wall_geoms: np.ndarray
    wall_mocap: np.ndarray
    floor_material: int
    wall_material: int
    floor_texture: int
    wall_texture: int
    distractor_geoms: np.ndarray
    distractor_mocap: np.ndarray
    distractor_material: np.ndarray
    distractor_texture: int
    light_ids: np.ndarray
    marker_geoms: np.ndarray
    keypoint_link_label: np.ndarray
    link_neighbours: np.ndarray
    texture_size: int
    floor_z: float

    @property
    def num_light_slots(self) -> int:
        return len(self.light_ids)

    @property
    def num_distractor_slots(self) -> int:
        return len(self.distractor_geoms)


def _parent_links(robot: RobotModel) -> dict[str, str]:
    """{child link: parent link} over all non-root links of the URDF."""
    return {link: parent for link in robot.link_names if (parent := robot.parent_link(link)) is not None}


def _visual_ancestor(parent_of: dict[str, str], link: str | None, visual: set[str]) -> str | None:
    """``link`` itself if it has visuals, else its nearest ancestor that has (None if none)."""
    while link is not None and link not in visual:
        link = parent_of.get(link)
    return link


def _link_neighbours(parent_of: dict[str, str], link_names: list[str]) -> np.ndarray:
    """(L, L) bool adjacency of visual links, links without visuals collapsed into their parent."""
    visual = set(link_names)
    idx = {l: i for i, l in enumerate(link_names)}
    adj = np.eye(len(link_names), dtype=bool)
    for child, parent in parent_of.items():
        if child not in visual:
            continue
        anc = _visual_ancestor(parent_of, parent, visual)
        if anc is not None:
            a, b = idx[anc], idx[child]
            adj[a, b] = adj[b, a] = True
    return adj


def build_scene_model(robot: RobotModel, spec: KeypointSpec, *, cache_dir: str | os.PathLike | None = None,
                      max_width: int = 1920, max_height: int = 1200, num_light_slots: int = 4,
                      num_distractor_slots: int = 12, texture_size: int = 256, shadow_map_size: int = 1024,
                      marker_radius: float = 0.004, mesh_reduction: float = 0.0):
    """Compile the MuJoCo scene for ``robot``.

    Args:
        robot: kinematics and visual meshes (world frame = ``robot.base_link``).
        spec: keypoint spec; one marker sphere per keypoint is added for self-checks.
        cache_dir: mesh conversion cache (see :func:`load_mesh_parts`).
        max_width, max_height: largest image the offscreen buffer can hold, pixels.
        num_light_slots: lights that :class:`SceneAppearance` may switch on (OpenGL allows 8).
        num_distractor_slots: size of the distractor geom pool.
        texture_size: side of the procedural floor/wall/distractor textures, pixels.
        shadow_map_size: shadow map resolution, pixels.
        marker_radius: radius of the keypoint marker spheres, metres.
        mesh_reduction: fraction of robot triangles removed by decimation (see :func:`load_mesh_parts`).

    Returns:
        (mujoco.MjModel, SceneIndex).
    """
    mujoco = import_mujoco()

    if spec.base_link != robot.base_link:
        raise ValueError(f"spec base link {spec.base_link!r} differs from model base link {robot.base_link!r}")
    ms = mujoco.MjSpec()
    ms.modelname = f"ctrnet_sim_{spec.robot}"
    ms.compiler.discardvisual = False  # the scene is *only* visual geometry
    ms.compiler.inertiafromgeom = mujoco.mjtInertiaFromGeom.mjINERTIAFROMGEOM_FALSE
    ms.visual.global_.offwidth = int(max_width)
    ms.visual.global_.offheight = int(max_height)
    ms.visual.quality.offsamples = 0  # exact segmentation ids; RGB anti-aliasing is done in post
    ms.visual.quality.shadowsize = int(shadow_map_size)
    ms.visual.map.znear = 0.005  # near plane = znear * extent = 1 cm
    ms.visual.map.zfar = 25.0
    ms.visual.headlight.active = 1  # carries the global ambient term only
    ms.visual.headlight.diffuse = [0.0, 0.0, 0.0]
    ms.visual.headlight.specular = [0.0, 0.0, 0.0]
    ms.stat.extent = 2.0
    ms.stat.center = [0.0, 0.0, 0.5]

    meshes: list[VisualMesh] = robot.visual_meshes()
    link_names = [l for l in robot.link_names if any(m.link == l for m in meshes)]
    if not link_names:
        raise ValueError("the URDF has no visual meshes to render")
    label_of = {l: i for i, l in enumerate(link_names)}
    kp_links = [k.link for k in spec.keypoints]
    body_links = link_names + [l for l in dict.fromkeys(kp_links) if l not in label_of]
    bodies = {}
    for link in body_links:
        bodies[link] = ms.worldbody.add_body(name=f"link:{link}", mocap=True)

    # Robot geometry: one MuJoCo mesh per (file part), one material per distinct colour.
    color_classes: dict[tuple, int] = {}
    robot_geom_names: list[tuple[str, str]] = []  # (geom name, link)
    part_cache: dict[tuple, list[MeshPart]] = {}
    min_z = np.inf
    zero_poses = robot.link_poses(robot.default_positions(), links=link_names)
    for vi, vm in enumerate(meshes):
        key = (str(vm.path), vm.scale, vm.rgba)
        if key not in part_cache:
            part_cache[key] = load_mesh_parts(vm.path, scale=vm.scale, fallback_rgba=vm.rgba, reduction=mesh_reduction,
                                              cache_dir=cache_dir)
        t, q = se3.transform_to_translation_quat(vm.T_link_mesh)
        for pi, part in enumerate(part_cache[key]):
            cls_key = tuple(np.round(part.rgba * 255).astype(int).tolist())
            if cls_key not in color_classes:
                color_classes[cls_key] = len(color_classes)
                ms.add_material(name=f"robot_mat{color_classes[cls_key]}", rgba=list(part.rgba))
            mesh_name = f"m{vi}_{pi}"
            mesh = ms.add_mesh(name=mesh_name)
            mesh.uservert = part.vertices.reshape(-1).astype(np.float64).tolist()
            if len(part.normals):
                mesh.usernormal = part.normals.reshape(-1).astype(np.float64).tolist()
            mesh.userface = part.faces.reshape(-1).tolist()
            mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL
            gname = f"robot:{vm.link}:{vi}:{pi}"
            bodies[vm.link].add_geom(
                name=gname, type=mujoco.mjtGeom.mjGEOM_MESH, meshname=mesh_name,
                pos=t.tolist(), quat=[q[3], q[0], q[1], q[2]], material=f"robot_mat{color_classes[cls_key]}",
                contype=0, conaffinity=0, group=GEOM_GROUP_ROBOT, mass=0.0)
            robot_geom_names.append((gname, vm.link))
            if vm.link == robot.base_link:
                pts = se3.transform_points(zero_poses[vm.link] @ vm.T_link_mesh, part.vertices)
                min_z = min(min_z, float(pts[:, 2].min()))
    floor_z = (min_z if np.isfinite(min_z) else 0.0) - 1e-3

    # Keypoint markers: tiny spheres, hidden unless a pass enables GEOM_GROUP_MARKER.
    for k, kp in enumerate(spec.keypoints):
        bodies[kp.link].add_geom(name=f"marker:{k}", type=mujoco.mjtGeom.mjGEOM_SPHERE,
                                 size=[marker_radius, 0, 0], pos=list(kp.offset), rgba=[1, 0, 1, 1],
                                 contype=0, conaffinity=0, group=GEOM_GROUP_MARKER, mass=0.0)

    # Room: floor plane, four walls and a ceiling (boxes resized at run time), each textured.
    def add_texture(name: str) -> None:
        ms.add_texture(name=name, type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_FLAT,
                       width=texture_size, height=texture_size, rgb1=[1, 1, 1], rgb2=[1, 1, 1], nchannel=3)

    for name in ("floor", "wall", "distractor"):
        add_texture(f"tex_{name}")
    for name in ("floor", "wall"):
        mat = ms.add_material(name=f"mat_{name}", texuniform=True, texrepeat=[1, 1])
        mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = f"tex_{name}"
    ms.worldbody.add_geom(name="room:floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[20, 20, 0.1],
                          pos=[0, 0, floor_z], material="mat_floor", contype=0, conaffinity=0,
                          group=GEOM_GROUP_ROOM)
    # Geoms that move at run time sit alone in a mocap body at its origin: MuJoCo does not
    # recompute the poses of geoms attached to the world body after compilation.
    for w in _WALL_NAMES:
        body = ms.worldbody.add_body(name=f"room:{w}", mocap=True)
        body.add_geom(name=f"room:{w}", type=mujoco.mjtGeom.mjGEOM_BOX, size=[1, 1, 1], material="mat_wall",
                      contype=0, conaffinity=0, group=GEOM_GROUP_ROOM, mass=0.0)
    for d in range(num_distractor_slots):
        mat = ms.add_material(name=f"mat_distractor{d}", texuniform=False, texrepeat=[1, 1])
        mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "tex_distractor"
        body = ms.worldbody.add_body(name=f"distractor:{d}", mocap=True, pos=[0, 0, -100.0])
        body.add_geom(name=f"distractor:{d}", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.05, 0.05, 0.05],
                      material=f"mat_distractor{d}", contype=0, conaffinity=0, group=GEOM_GROUP_DISTRACTOR,
                      mass=0.0)
    for i in range(num_light_slots):
        ms.worldbody.add_light(name=f"light{i}", pos=[0, 0, 3], dir=[0, 0, -1], active=False)

    model = ms.compile()

    def gid(name: str) -> int:
        return int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name))

    def mid(name: str) -> int:
        return int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_MATERIAL, name))

    def tid(name: str) -> int:
        return int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_TEXTURE, name))

    def mocap(body: str) -> int:
        return int(model.body_mocapid[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)])

    geom_label = np.full(model.ngeom, -1, dtype=np.int16)
    robot_geoms = []
    for gname, link in robot_geom_names:
        g = gid(gname)
        geom_label[g] = label_of[link]
        robot_geoms.append(g)
    parent_of = _parent_links(robot)
    visual = set(link_names)
    kp_label = np.array([label_of.get(_visual_ancestor(parent_of, l, visual), -1) for l in kp_links],
                        dtype=np.int64)
    index = SceneIndex(
        link_names=link_names,
        body_links=body_links,
        link_mocap=np.array([mocap(f"link:{l}") for l in body_links], dtype=np.int64),
        geom_label=geom_label,
        robot_geoms=np.array(robot_geoms, dtype=np.int64),
        robot_materials=np.array([mid(f"robot_mat{c}") for c in range(len(color_classes))], dtype=np.int64),
        robot_base_rgba=np.array([np.asarray(k, dtype=np.float64) / 255.0 for k in color_classes]),
        floor_geom=gid("room:floor"),
        wall_geoms=np.array([gid(f"room:{w}") for w in _WALL_NAMES], dtype=np.int64),
        wall_mocap=np.array([mocap(f"room:{w}") for w in _WALL_NAMES], dtype=np.int64),
        floor_material=mid("mat_floor"),
        wall_material=mid("mat_wall"),
        floor_texture=tid("tex_floor"),
        wall_texture=tid("tex_wall"),
        distractor_geoms=np.array([gid(f"distractor:{d}") for d in range(num_distractor_slots)], dtype=np.int64),
        distractor_mocap=np.array([mocap(f"distractor:{d}") for d in range(num_distractor_slots)], dtype=np.int64),
        distractor_material=np.array([mid(f"mat_distractor{d}") for d in range(num_distractor_slots)],
                                     dtype=np.int64),
        distractor_texture=tid("tex_distractor"),
        light_ids=np.array([int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_LIGHT, f"light{i}"))
                            for i in range(num_light_slots)], dtype=np.int64),
        marker_geoms=np.array([gid(f"marker:{k}") for k in range(len(spec))], dtype=np.int64),
        keypoint_link_label=kp_label,
        link_neighbours=_link_neighbours(parent_of, link_names),
        texture_size=int(texture_size),
        floor_z=float(floor_z),
    )
    return model, index
