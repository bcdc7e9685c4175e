"""Offscreen MuJoCo renderer of a URDF robot with exact, OpenCV-consistent ground truth.

How a frame is made (:meth:`MujocoRenderer.render`):

1. Forward kinematics (:meth:`RobotModel.link_poses`) places one mocap body per link; the world
   frame is the robot's base frame.
2. ``mjv_updateScene`` collects the geometry, then the OpenGL camera of the scene is overwritten
   with the pose ``T_camera_base`` and an off-axis frustum built from ``K``, so the image follows
   OpenCV's pinhole model exactly (pixel centres at integers, any ``fx``, ``fy``, ``cx``, ``cy``).
3. Pass 1 renders RGB. Pass 2 renders MuJoCo's segmentation (one flat colour id per geom) and
   reads the depth buffer at the same time; the ids map to link labels and the mask.
4. Keypoints are projected with :meth:`PinholeCamera.project`; their visibility is decided from
   the segmentation and depth at the keypoint's pixel (see :func:`keypoint_visibility`).

OpenGL runs offscreen on the CPU through EGL (Mesa llvmpipe) unless ``MUJOCO_GL`` says otherwise
(see :func:`~ctrnet_ros.sim.scene.import_mujoco`). A renderer owns one GL context: use it from one
thread, and :meth:`MujocoRenderer.close` it (or use it as a context manager) when done.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import cv2
import numpy as np

from ..core import se3
from ..core.camera import CameraModelError, PinholeCamera
from ..core.robot import KeypointSpec, RobotModel
from .frame import RenderedFrame
from .scene import (DISTRACTOR_SHAPES, GEOM_GROUP_DISTRACTOR, GEOM_GROUP_MARKER, GEOM_GROUP_ROBOT,
                    GEOM_GROUP_ROOM, SceneAppearance, SceneIndex, SurfaceSpec, build_scene_model,
                    import_mujoco)

__all__ = ["MujocoRenderer", "RenderError", "keypoint_visibility", "opengl_frustum"]

_LOG = logging.getLogger(__name__)

#: A geom group no render pass shows: parking place for switched-off floor, walls and distractors.
_GEOM_GROUP_HIDDEN = 4
#: Stands for "plain white" in the texture upload cache.
_WHITE = object()


class RenderError(RuntimeError):
    """The renderer cannot draw what was asked (GL unavailable, camera unsupported, too large)."""


def opengl_frustum(camera: PinholeCamera, near: float) -> tuple[float, float, float, float]:
    """Off-axis OpenGL frustum that reproduces ``camera.K`` exactly.

    The image spans u in [-0.5, W - 0.5] and v in [-0.5, H - 0.5] (OpenCV pixel centres at integers);
    a camera-frame point (x, y, z) lands at u = fx x / z + cx, v = fy y / z + cy. At the near plane
    the image edges are therefore at x = near (edge - cx) / fx, and OpenGL's y axis points up.

    Args:
        camera: pinhole camera without skew.
        near: near clipping distance, metres.
    Returns:
        (center, half_width, bottom, top) at the near plane, metres, as ``mjvGLCamera`` takes them.
    """
    K = camera.K
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    left = near * (-0.5 - cx) / fx
    right = near * (camera.width - 0.5 - cx) / fx
    top = near * (cy + 0.5) / fy
    bottom = -near * (camera.height - 0.5 - cy) / fy
    return 0.5 * (left + right), 0.5 * (right - left), bottom, top


def keypoint_visibility(uv: np.ndarray, z: np.ndarray, in_image: np.ndarray, keypoint_label: np.ndarray,
                        labels: np.ndarray, depth: np.ndarray,
                        link_neighbours: np.ndarray, *, surface_tolerance: float,
                        self_occlusion_tolerance: float) -> np.ndarray:
    """Which keypoints the image actually shows (not hidden behind something else).

    A keypoint at a joint origin lies *inside* the robot's surface, so a plain depth test would
    call every keypoint occluded by its own link. The rule used instead, at the keypoint's pixel:

    * nothing is drawn closer than ``z - surface_tolerance`` -> visible (free-standing point);
    * else the first surface is the keypoint's own link, or a link adjacent to it in the kinematic
      tree (the two links meeting at a joint), and lies at most ``self_occlusion_tolerance`` in
      front of the keypoint -> visible (we see the joint's own shell);
    * else (another link, a distractor, the floor, or the own link far in front) -> occluded.

    Args:
        uv: (K, 2) pixels (OpenCV convention); z: (K,) depth along the optical axis, metres.
        in_image: (K,) bool, keypoint in front of the camera and inside the image.
        keypoint_label: (K,) link label of each keypoint (-1: no visual link).
        labels: (H, W) int link label of the first surface per pixel, -1 if not the robot.
        depth: (H, W) float distance along the optical axis of the first surface, metres
            (+inf where nothing is drawn).
        link_neighbours: (L, L) bool adjacency of links (including the diagonal).
        surface_tolerance: metres; depth noise allowance for "nothing in front".
        self_occlusion_tolerance: metres; how far inside its own link's shell a keypoint may lie.
    Returns:
        (K,) bool.
    """
    H, W = labels.shape
    vis = np.zeros(len(uv), dtype=bool)
    for k in np.flatnonzero(in_image):
        u = int(np.clip(np.rint(uv[k, 0]), 0, W - 1))
        v = int(np.clip(np.rint(uv[k, 1]), 0, H - 1))
        hit_depth = float(depth[v, u])
        if hit_depth >= z[k] - surface_tolerance:
            vis[k] = True
            continue
        hit = int(labels[v, u])
        own = keypoint_label[k]
        if hit >= 0 and own >= 0 and link_neighbours[own, hit] and hit_depth >= z[k] - self_occlusion_tolerance:
            vis[k] = True
    return vis


class MujocoRenderer:
    """Renders a URDF robot offscreen with MuJoCo; implements :class:`~ctrnet_ros.sim.frame.Renderer`.

    Args:
        robot: kinematics and visual meshes; images are rendered in ``robot.base_link`` coordinates.
        spec: keypoints to project (must share ``robot``'s base link).
        cache_dir: mesh conversion cache (default :func:`~ctrnet_ros.sim.scene.default_cache_dir`).
        max_width, max_height: largest image this renderer can draw, pixels (sizes the GL buffer).
        num_light_slots, num_distractor_slots, texture_size: capacity of the scene (see
            :func:`~ctrnet_ros.sim.scene.build_scene_model`).
        mesh_reduction: fraction of robot triangles removed by decimation; 0 renders the URDF's meshes
            as they are (see :func:`~ctrnet_ros.sim.scene.load_mesh_parts`).
        self_occlusion_tolerance: metres a keypoint may lie behind its own link's surface and still
            count as visible (see :func:`keypoint_visibility`).
        appearance: initial scene appearance (default :meth:`SceneAppearance.neutral`).
    """

    def __init__(self, robot: RobotModel, spec: KeypointSpec, *, cache_dir: str | os.PathLike | None = None,
                 max_width: int = 1920, max_height: int = 1200, num_light_slots: int = 4,
                 num_distractor_slots: int = 12, texture_size: int = 256, mesh_reduction: float = 0.0,
                 self_occlusion_tolerance: float = 0.15, appearance: SceneAppearance | None = None):
        mujoco = import_mujoco()
        self._mj = mujoco
        self.robot = robot
        self.spec = spec
        self.self_occlusion_tolerance = float(self_occlusion_tolerance)
        self.surface_tolerance = 0.005
        self._model, self._index = build_scene_model(
            robot, spec, cache_dir=cache_dir, max_width=max_width, max_height=max_height,
            num_light_slots=num_light_slots, num_distractor_slots=num_distractor_slots, texture_size=texture_size,
            mesh_reduction=mesh_reduction)
        self._data = mujoco.MjData(self._model)
        self._gl = None
        self._con = None
        try:
            self._gl = mujoco.GLContext(int(max_width), int(max_height))
            self._gl.make_current()
            self._con = mujoco.MjrContext(self._model, mujoco.mjtFontScale.mjFONTSCALE_100)
        except Exception as exc:  # noqa: BLE001 - PyOpenGL/EGL raise many unrelated types
            self.close()
            raise RenderError(f"cannot create an offscreen OpenGL context with MUJOCO_GL="
                              f"{os.environ.get('MUJOCO_GL')!r} ({exc}); try MUJOCO_GL=osmesa "
                              f"(apt-get install libosmesa6)") from exc
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._con.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(self._model, maxgeom=self._model.ngeom + 100)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        self._option = mujoco.MjvOption()
        self._free_camera = mujoco.MjvCamera()
        mujoco.mjv_defaultFreeCamera(self._model, self._free_camera)
        self._max_size = (int(max_width), int(max_height))
        self._uploaded: dict[int, object] = {}  # texture id -> the array (or _WHITE) last uploaded
        self._background: np.ndarray | None = None
        self.set_appearance(appearance if appearance is not None else SceneAppearance.neutral())

    @classmethod
    def for_robot(cls, name: str, **kwargs) -> "MujocoRenderer":
        """Renderer for a built-in robot config (``config/robots/<name>.yaml``), e.g. ``"panda"``."""
        spec = KeypointSpec.builtin(name)
        return cls(RobotModel.from_spec(spec), spec, **kwargs)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the GL resources; the renderer cannot be used afterwards."""
        if self._con is not None and self._gl is not None:
            self._gl.make_current()
            self._con.free()
        self._con = None
        if self._gl is not None:
            self._gl.free()
        self._gl = None

    def __enter__(self) -> "MujocoRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn GL down already
            pass

    # -- introspection -------------------------------------------------------------------------
    @property
    def link_names(self) -> list[str]:
        """Links with visual geometry; the index into this list is a pixel's link label."""
        return list(self._index.link_names)

    @property
    def robot_base_rgba(self) -> np.ndarray:
        """(C, 4) the URDF's colour of each robot colour class (see :class:`SceneAppearance`)."""
        return self._index.robot_base_rgba.copy()

    @property
    def scene_index(self) -> SceneIndex:
        return self._index

    @property
    def floor_z(self) -> float:
        """Height of the floor in the base frame, metres (just below the base link's mesh)."""
        return self._index.floor_z

    # -- appearance ----------------------------------------------------------------------------
    def _upload_texture(self, tex_id: int, image: np.ndarray | None) -> None:
        """Copy an (S, S, 3) uint8 image (None: plain white) into texture ``tex_id`` on the GPU.

        Skipped when the very same array object is already uploaded (the renderer keeps a
        reference, so the identity check cannot be fooled by a recycled ``id``).
        """
        m = self._model
        key = _WHITE if image is None else image
        if self._uploaded.get(tex_id) is key:
            return
        w, h = int(m.tex_width[tex_id]), int(m.tex_height[tex_id])
        if image is None:
            data = np.full((h, w, 3), 255, dtype=np.uint8)
        else:
            img = np.asarray(image)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"textures must be (S, S, 3) uint8, got {img.shape} {img.dtype}")
            data = img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        adr = int(m.tex_adr[tex_id])
        m.tex_data[adr: adr + w * h * 3] = data.reshape(-1)
        self._gl.make_current()
        self._mj.mjr_uploadTexture(m, self._con, tex_id)
        self._uploaded[tex_id] = key

    def _apply_surface(self, mat_id: int, tex_id: int | None, surface: SurfaceSpec) -> None:
        m = self._model
        m.mat_rgba[mat_id] = np.asarray(surface.rgba, dtype=np.float64)
        m.mat_texrepeat[mat_id] = np.asarray(surface.texrepeat, dtype=np.float64)
        m.mat_specular[mat_id] = surface.specular
        m.mat_shininess[mat_id] = surface.shininess
        m.mat_reflectance[mat_id] = surface.reflectance
        if tex_id is not None:
            self._upload_texture(tex_id, surface.texture)

    def set_appearance(self, appearance: SceneAppearance) -> None:
        """Make ``appearance`` the scene's look for every following :meth:`render` call."""
        mj, m, d, idx = self._mj, self._model, self._data, self._index
        if len(appearance.lights) > idx.num_light_slots:
            raise ValueError(f"{len(appearance.lights)} lights given, the scene has {idx.num_light_slots} slots")
        if len(appearance.distractors) > idx.num_distractor_slots:
            raise ValueError(f"{len(appearance.distractors)} distractors given, the scene has "
                             f"{idx.num_distractor_slots} slots")
        # Lights.
        m.light_active[idx.light_ids] = 0
        for lid, light in zip(idx.light_ids, appearance.lights):
            m.light_active[lid] = 1
            m.light_type[lid] = (mj.mjtLightType.mjLIGHT_DIRECTIONAL if light.directional
                                 else mj.mjtLightType.mjLIGHT_SPOT)
            m.light_pos[lid] = light.pos
            m.light_dir[lid] = np.asarray(light.direction) / np.linalg.norm(light.direction)
            m.light_diffuse[lid] = light.diffuse
            m.light_specular[lid] = light.specular
            m.light_ambient[lid] = 0.0
            m.light_castshadow[lid] = int(bool(light.cast_shadow))
            m.light_cutoff[lid] = light.cutoff_deg
            m.light_exponent[lid] = light.exponent
            m.light_attenuation[lid] = (1.0, 0.0, 0.0)
        m.vis.headlight.ambient = np.asarray(appearance.ambient, dtype=np.float32)
        # Robot materials.
        rgba = idx.robot_base_rgba if appearance.robot_rgba is None else np.asarray(appearance.robot_rgba)
        if rgba.shape != idx.robot_base_rgba.shape:
            raise ValueError(f"robot_rgba must have shape {idx.robot_base_rgba.shape}, got {rgba.shape}")
        m.mat_rgba[idx.robot_materials] = rgba
        m.mat_specular[idx.robot_materials] = appearance.robot_specular
        m.mat_shininess[idx.robot_materials] = appearance.robot_shininess
        m.mat_reflectance[idx.robot_materials] = appearance.robot_reflectance
        # Room.
        if appearance.floor is not None:
            m.geom_group[idx.floor_geom] = GEOM_GROUP_ROOM
            self._apply_surface(idx.floor_material, idx.floor_texture, appearance.floor)
        else:
            m.geom_group[idx.floor_geom] = _GEOM_GROUP_HIDDEN
        e, h, z0, t = appearance.room_half_extent, appearance.room_height, idx.floor_z, 0.05
        boxes = [((e + t, 0, z0 + h / 2), (t, e + 2 * t, h / 2)), ((-e - t, 0, z0 + h / 2), (t, e + 2 * t, h / 2)),
                 ((0, e + t, z0 + h / 2), (e + 2 * t, t, h / 2)), ((0, -e - t, z0 + h / 2), (e + 2 * t, t, h / 2)),
                 ((0, 0, z0 + h + t), (e + 2 * t, e + 2 * t, t))]
        for g, mocap, (pos, size) in zip(idx.wall_geoms, idx.wall_mocap, boxes):
            d.mocap_pos[mocap] = pos
            d.mocap_quat[mocap] = (1.0, 0.0, 0.0, 0.0)
            m.geom_size[g] = size
            m.geom_group[g] = GEOM_GROUP_ROOM if appearance.walls is not None else _GEOM_GROUP_HIDDEN
        if appearance.walls is not None:
            self._apply_surface(idx.wall_material, idx.wall_texture, appearance.walls)
        # Distractors.
        surf = appearance.distractor_surface or SurfaceSpec(rgba=np.ones(4))
        self._upload_texture(idx.distractor_texture, surf.texture)
        geom_types = {name: getattr(mj.mjtGeom, f"mjGEOM_{name.upper()}") for name in DISTRACTOR_SHAPES}
        for i, (g, mocap, mat) in enumerate(zip(idx.distractor_geoms, idx.distractor_mocap,
                                                idx.distractor_material)):
            if i >= len(appearance.distractors):
                m.geom_group[g] = _GEOM_GROUP_HIDDEN
                d.mocap_pos[mocap] = (0.0, 0.0, -100.0)
                continue
            obj = appearance.distractors[i]
            if obj.shape not in geom_types:
                raise ValueError(f"unknown distractor shape {obj.shape!r}; known: {DISTRACTOR_SHAPES}")
            m.geom_type[g] = geom_types[obj.shape]
            m.geom_size[g] = obj.size
            m.geom_rbound[g] = float(np.linalg.norm(obj.size))
            m.geom_group[g] = GEOM_GROUP_DISTRACTOR
            d.mocap_pos[mocap] = obj.pos
            qx, qy, qz, qw = np.asarray(obj.quat_xyzw, dtype=np.float64) / np.linalg.norm(obj.quat_xyzw)
            d.mocap_quat[mocap] = (qw, qx, qy, qz)
            m.mat_rgba[mat] = obj.rgba
            m.mat_texrepeat[mat] = surf.texrepeat
            m.mat_specular[mat] = surf.specular
            m.mat_shininess[mat] = surf.shininess
            m.mat_reflectance[mat] = 0.0
        self._background = None if appearance.walls is not None else appearance.background

    # -- rendering -----------------------------------------------------------------------------
    def _check_camera(self, camera: PinholeCamera) -> None:
        if camera.has_distortion:
            raise CameraModelError(
                "MujocoRenderer draws ideal pinhole images: render with D = 0 (the same K) and apply lens "
                "distortion to the image afterwards if needed")
        if abs(camera.K[0, 1]) > 1e-12 or abs(camera.K[1, 0]) > 1e-12 or abs(camera.K[2, 0]) > 1e-12 \
                or abs(camera.K[2, 1]) > 1e-12:
            raise CameraModelError(f"skewed intrinsics are not supported by the renderer: K = {camera.K.tolist()}")
        if camera.width > self._max_size[0] or camera.height > self._max_size[1]:
            raise RenderError(f"image {camera.width}x{camera.height} exceeds this renderer's buffer "
                              f"{self._max_size[0]}x{self._max_size[1]}; create it with larger max_width/max_height")

    def _set_robot_pose(self, joint_positions: Mapping[str, float]) -> dict[str, np.ndarray]:
        idx, d = self._index, self._data
        poses = self.robot.link_poses(joint_positions, links=idx.body_links)
        for link, mocap in zip(idx.body_links, idx.link_mocap):
            T = poses[link]
            t, q = se3.transform_to_translation_quat(T)
            d.mocap_pos[mocap] = t
            d.mocap_quat[mocap] = (q[3], q[0], q[1], q[2])
        self._mj.mj_forward(self._model, d)
        return poses

    def _prepare_scene(self, camera: PinholeCamera, T_world_camera: np.ndarray, groups: tuple[int, ...]) -> None:
        """Collect geometry of ``groups`` and point the scene's OpenGL camera through ``camera``."""
        mj = self._mj
        self._option.geomgroup[:] = 0
        for g in groups:
            self._option.geomgroup[g] = 1
        mj.mjv_updateScene(self._model, self._data, self._option, None, self._free_camera,
                           mj.mjtCatBit.mjCAT_ALL, self._scene)
        # mjr_render draws the average of the two stereo cameras: set both.
        for cam in (self._scene.camera[0], self._scene.camera[1]):
            near = float(cam.frustum_near)
            center, half_width, bottom, top = opengl_frustum(camera, near)
            cam.pos[:] = T_world_camera[:3, 3]
            cam.forward[:] = T_world_camera[:3, 2]  # optical +z
            cam.up[:] = -T_world_camera[:3, 1]  # optical -y
            cam.frustum_center = center
            cam.frustum_width = half_width
            cam.frustum_bottom = bottom
            cam.frustum_top = top
            cam.orthographic = 0

    def _render_rgb(self, camera: PinholeCamera) -> np.ndarray:
        mj = self._mj
        rect = mj.MjrRect(0, 0, camera.width, camera.height)
        mj.mjr_render(rect, self._scene, self._con)
        rgb = np.empty((camera.height, camera.width, 3), dtype=np.uint8)
        mj.mjr_readPixels(rgb, None, rect, self._con)
        return np.ascontiguousarray(rgb[::-1])

    def _render_ids(self, camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
        """Segmentation pass: ((H, W) int geom id or -1, (H, W) float64 depth in metres, inf if empty)."""
        mj, scn = self._mj, self._scene
        flags = scn.flags
        flags[mj.mjtRndFlag.mjRND_SEGMENT] = 1
        flags[mj.mjtRndFlag.mjRND_IDCOLOR] = 1
        try:
            rect = mj.MjrRect(0, 0, camera.width, camera.height)
            mj.mjr_render(rect, scn, self._con)
            ids = np.empty((camera.height, camera.width, 3), dtype=np.uint8)
            zbuf = np.empty((camera.height, camera.width), dtype=np.float32)
            mj.mjr_readPixels(ids, zbuf, rect, self._con)
        finally:
            flags[mj.mjtRndFlag.mjRND_SEGMENT] = 0
            flags[mj.mjtRndFlag.mjRND_IDCOLOR] = 0
        ids = ids[::-1].astype(np.int64)
        segid = ids[..., 0] | (ids[..., 1] << 8) | (ids[..., 2] << 16)
        lut = np.full(scn.ngeom + 1, -1, dtype=np.int64)
        for g in scn.geoms[: scn.ngeom]:
            if g.segid >= 0 and g.objtype == mj.mjtObj.mjOBJ_GEOM:
                lut[g.segid + 1] = g.objid
        geom = lut[np.clip(segid, 0, scn.ngeom)]
        # Depth: MuJoCo renders with reversed Z; invert its perspective map (as mujoco.Renderer does).
        near = np.float32(scn.camera[0].frustum_near)
        far = np.float32(scn.camera[0].frustum_far)
        c = np.float32(-0.5) * (-(far + near) / (far - near)) - np.float32(0.5)
        dd = np.float32(-0.5) * (-(np.float32(2) * far * near) / (far - near))
        z = zbuf[::-1].astype(np.float64)
        with np.errstate(divide="ignore"):
            depth = np.float64(dd) / (z + np.float64(c))
        depth[(geom < 0) | ~np.isfinite(depth)] = np.inf
        return geom, depth

    def render(self, joint_positions: Mapping[str, float], T_camera_base: np.ndarray,
               camera: PinholeCamera) -> RenderedFrame:
        """Render the robot at ``joint_positions`` seen from ``T_camera_base`` through ``camera``.

        Args:
            joint_positions: joint name -> position (radians / metres); every joint the robot's links
                depend on must be present (see :meth:`RobotModel.link_poses`).
            T_camera_base: (4, 4) base frame -> camera optical frame (x right, y down, z forward), metres.
            camera: intrinsics and image size; no distortion, no skew (fx != fy and any principal
                point are fine).
        Returns:
            A :class:`RenderedFrame`; ``rgb`` is the clean render (no image effects).
        """
        self._check_camera(camera)
        if self._con is None:
            raise RenderError("render called after close()")
        T_camera_base = np.asarray(T_camera_base, dtype=np.float64)
        if T_camera_base.shape != (4, 4):
            raise ValueError(f"T_camera_base must be (4, 4), got {T_camera_base.shape}")
        self._gl.make_current()
        poses = self._set_robot_pose(joint_positions)
        T_world_camera = se3.invert_transform(T_camera_base)
        self._prepare_scene(camera, T_world_camera, (GEOM_GROUP_ROBOT, GEOM_GROUP_ROOM, GEOM_GROUP_DISTRACTOR))
        rgb = self._render_rgb(camera)
        geom, depth = self._render_ids(camera)
        labels = np.where(geom >= 0, self._index.geom_label[np.maximum(geom, 0)], -1).astype(np.int16)
        if self._background is not None:
            empty = geom < 0
            if np.any(empty):
                bg = cv2.resize(self._background, (camera.width, camera.height), interpolation=cv2.INTER_LINEAR)
                rgb[empty] = bg[empty]

        kp_base = np.array([poses[k.link][:3, :3] @ np.asarray(k.offset) + poses[k.link][:3, 3]
                            for k in self.spec.keypoints])
        kp_cam = se3.transform_points(T_camera_base, kp_base)
        uv = camera.project(kp_cam)
        in_image = (kp_cam[:, 2] > 1e-9) & camera.in_image(uv)
        visible = keypoint_visibility(uv, kp_cam[:, 2], in_image, self._index.keypoint_link_label, labels,
                                      depth, self._index.link_neighbours,
                                      surface_tolerance=self.surface_tolerance,
                                      self_occlusion_tolerance=self.self_occlusion_tolerance)
        return RenderedFrame(
            rgb=rgb, mask=labels >= 0, link_labels=labels, link_names=self.link_names, camera=camera,
            T_camera_base=T_camera_base.copy(), joint_positions={k: float(v) for k, v in joint_positions.items()},
            keypoints_base=kp_base, keypoints_camera=kp_cam, keypoints_uv=uv, in_image=in_image, visible=visible)

    def render_keypoint_markers(self, joint_positions: Mapping[str, float], T_camera_base: np.ndarray,
                                camera: PinholeCamera, *, radius: float = 0.01) -> np.ndarray:
        """Rasteriser self-check: centroids of small spheres drawn at the keypoints, (K, 2) pixels.

        Each keypoint's sphere (``radius`` metres) is rendered alone (robot, room, distractors and the
        other markers hidden, so neighbours cannot overlap it) in a segmentation pass; the centroid
        of its pixels is returned (NaN if it covers none). This measures where MuJoCo's rasteriser
        puts a 3D point, independently of :meth:`PinholeCamera.project`.
        """
        self._check_camera(camera)
        self._gl.make_current()
        m, idx = self._model, self._index
        markers = idx.marker_geoms
        old_size = m.geom_size[markers, 0].copy()
        m.geom_size[markers, 0] = radius
        out = np.full((len(markers), 2), np.nan)
        try:
            self._set_robot_pose(joint_positions)
            T_world_camera = se3.invert_transform(np.asarray(T_camera_base, dtype=np.float64))
            for k, g in enumerate(markers):
                m.geom_group[markers] = _GEOM_GROUP_HIDDEN
                m.geom_group[g] = GEOM_GROUP_MARKER
                self._prepare_scene(camera, T_world_camera, (GEOM_GROUP_MARKER,))
                geom, _ = self._render_ids(camera)
                ys, xs = np.nonzero(geom == g)
                if len(xs):
                    out[k] = xs.mean(), ys.mean()
        finally:
            m.geom_size[markers, 0] = old_size
            m.geom_group[markers] = GEOM_GROUP_MARKER
        return out
