"""Camera pose from the robot's outline: the URDF meshes' silhouette fitted to predicted masks.

A keypoint network's errors are biased per view, so a static camera fused from thousands of
keypoints still sits centimetres off. The robot's outline is a far denser measurement: hundreds of
boundary points per frame, each a constraint on the pose. This module fits the silhouette of the
robot's meshes, at the joint positions of each frame, to the network's robot masks of many frames,
by Gauss-Newton on point-to-contour distances (the classic model-based contour tracker, here over a
whole window of frames at once):

1. **Render** the robot at the current pose (``cv2.fillPoly`` of the projected triangles, with
   sub-pixel vertex coordinates) and find the mesh vertices that lie on the rendered outline.
2. **Residuals.** For each outline vertex, the signed distance from its projection to the predicted
   mask's boundary (``mask_signed_distance``: positive inside the mask). Zero means the rendered
   outline lies on the predicted one there.
3. **Step.** Gauss-Newton with a Huber loss on those distances over all frames; the Jacobian of a
   distance is the distance field's gradient times the projection's derivative with respect to a
   left perturbation of ``T_camera_base`` (the convention of :mod:`ctrnet_ros.core.pnp`).
   Vertices are chosen again at every iteration, since the outline changes with the pose.

Everything happens in one pixel frame per observation (for the network's masks: the network-input
image, see :meth:`SilhouetteObservation.from_mask`), with an undistorted pinhole ``K``.

Conventions: ``T_parent_child`` maps child coordinates to parent coordinates; pixel ``(row i,
column j)`` has its centre at ``(u, v) = (j, i)`` (OpenCV, :mod:`ctrnet_ros.core.camera`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import cv2
import numpy as np

from . import se3
from .camera import ImageTransform, PinholeCamera
from .pnp import se3_exp

__all__ = ["SilhouetteMesh", "SilhouetteObservation", "SilhouetteFitConfig", "SilhouetteFitResult",
           "MaskResampler", "PosePrior", "SilhouetteRefineConfig", "SilhouetteRefiner", "RefineJob", "RefinedPose", "mask_signed_distance",
           "render_silhouette", "fit_silhouettes"]



@dataclass(frozen=True, eq=False)
class SilhouetteMesh:
    """A robot's meshes, each vertex in its link's frame.

    Attributes:
        links: L link names; ``T_base_link`` arrays follow this order.
        vertices: (V, 3) metres, in the frame of link ``links[vertex_link[i]]``.
        vertex_link: (V,) int index into ``links``.
        faces: (F, 3) int vertex indices (any winding).
    """

    links: tuple[str, ...]
    vertices: np.ndarray
    vertex_link: np.ndarray
    faces: np.ndarray

    @classmethod
    def from_link_meshes(cls, meshes: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]]) -> "SilhouetteMesh":
        """From ``{link: [(vertices (N, 3) metres in the link frame, faces (M, 3) int), ...]}``."""
        verts, vlink, faces = [], [], []
        offset = 0
        for li, (link, pieces) in enumerate(meshes.items()):
            for v, f in pieces:
                v = np.asarray(v, dtype=np.float64).reshape(-1, 3)
                f = np.asarray(f, dtype=np.int64).reshape(-1, 3)
                if f.size and (f.min() < 0 or f.max() >= len(v)):
                    raise ValueError(f"link {link!r}: face indices out of range for {len(v)} vertices")
                verts.append(v)
                faces.append(f + offset)
                vlink.append(np.full(len(v), li, dtype=np.int64))
                offset += len(v)
        if not faces or sum(len(f) for f in faces) == 0:
            raise ValueError("a silhouette mesh needs at least one triangle")
        return cls(links=tuple(meshes), vertices=np.concatenate(verts), vertex_link=np.concatenate(vlink),
                   faces=np.concatenate(faces))

    def __post_init__(self):
        # vertices are stored link by link (from_link_meshes); remember each link's block
        order_ok = np.all(np.diff(self.vertex_link) >= 0)
        bounds = np.searchsorted(self.vertex_link, np.arange(len(self.links) + 1)) if order_ok else None
        object.__setattr__(self, "_blocks", bounds)
        object.__setattr__(self, "_face_columns", tuple(np.ascontiguousarray(self.faces[:, k]) for k in range(3)))

    def camera_points(self, T_camera_base: np.ndarray, T_base_link: np.ndarray) -> np.ndarray:
        """(V, 3) vertices in the camera optical frame, metres. ``T_base_link``: (L, 4, 4)."""
        T = np.asarray(T_camera_base, dtype=np.float64) @ np.asarray(T_base_link, dtype=np.float64)  # (L, 4, 4)
        if self._blocks is None:
            R, t = T[self.vertex_link, :3, :3], T[self.vertex_link, :3, 3]
            return np.einsum("vij,vj->vi", R, self.vertices) + t
        out = np.empty_like(self.vertices)
        b = self._blocks
        for li in range(len(self.links)):
            if b[li + 1] > b[li]:
                out[b[li]:b[li + 1]] = self.vertices[b[li]:b[li + 1]] @ T[li, :3, :3].T + T[li, :3, 3]
        return out


def _project(P: np.ndarray, K: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray]:
    z = P[:, 2]
    front = z > near
    zs = np.where(front, z, 1.0)
    uv = np.stack([K[0, 0] * P[:, 0] / zs + K[0, 2], K[1, 1] * P[:, 1] / zs + K[1, 2]], axis=1)
    return uv, front


def _fill(mesh: SilhouetteMesh, uv: np.ndarray, front: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Union of the projected triangles: (H, W) uint8, pixel centres tested against each triangle.

    Vectorised over all (triangle, pixel of its bounding box) pairs. (``cv2.fillPoly`` with many
    polygons fills by the even-odd rule, so the overlaps every closed mesh has would come out as holes.)
    """
    W, H = size
    img = np.zeros((H, W), dtype=np.uint8)
    f0, f1, f2 = mesh._face_columns
    ok = front[f0] & front[f1] & front[f2]
    a, b, c = uv[f0[ok]], uv[f1[ok]], uv[f2[ok]]  # (F, 2) each
    if not len(a):
        return img
    lo = np.ceil(np.minimum(np.minimum(a, b), c))
    hi = np.floor(np.maximum(np.maximum(a, b), c))
    x0, y0 = np.maximum(lo[:, 0], 0), np.maximum(lo[:, 1], 0)
    x1, y1 = np.minimum(hi[:, 0], W - 1), np.minimum(hi[:, 1], H - 1)
    w = np.maximum(x1 - x0 + 1, 0).astype(np.int64)
    h = np.maximum(y1 - y0 + 1, 0).astype(np.int64)
    n = w * h
    keep = n > 0
    if not keep.any():
        return img
    a, b, c = a[keep], b[keep], c[keep]
    x0, y0, w, n = x0[keep].astype(np.int64), y0[keep].astype(np.int64), w[keep], n[keep]
    # Each edge p -> q as a line function e(x, y) = A x + B y + C, oriented so that the triangle's
    # inside is e >= 0 for all three edges whatever its winding.
    sign = np.where((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]) >= 0,
                    1.0, -1.0)
    coeffs = []
    for p, q in ((a, b), (b, c), (c, a)):
        A = (p[:, 1] - q[:, 1]) * sign
        B = (q[:, 0] - p[:, 0]) * sign
        coeffs.append((A.astype(np.float32), B.astype(np.float32), (-(A * p[:, 0] + B * p[:, 1])).astype(np.float32)))
    face = np.repeat(np.arange(len(n)), n)
    offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    wf = w[face]
    px = x0[face] + offset % wf
    py = y0[face] + offset // wf
    pxf, pyf = px.astype(np.float32), py.astype(np.float32)
    inside = None
    for A, B, C in coeffs:
        e = A[face] * pxf + B[face] * pyf + C[face] >= 0
        inside = e if inside is None else inside & e
    img[py[inside], px[inside]] = 1
    return img


def render_silhouette(mesh: SilhouetteMesh, T_camera_base, T_base_link, K, size: tuple[int, int], *,
                      near: float = 0.01) -> np.ndarray:
    """(H, W) uint8 mask (1 = robot) of the meshes seen through pinhole ``K`` at ``size = (W, H)``.

    ``T_base_link``: (L, 4, 4) link poses in the base frame, in ``mesh.links`` order. Faces with a
    vertex closer than ``near`` metres to the camera plane are skipped.
    """
    P = mesh.camera_points(T_camera_base, T_base_link)
    uv, front = _project(P, np.asarray(K, dtype=np.float64), near)
    return _fill(mesh, uv, front, size)


def mask_signed_distance(prob: np.ndarray, size: tuple[int, int], *, threshold: float = 0.5,
                         smooth_px: float = 1.0) -> np.ndarray:
    """Signed distance (pixels, positive inside) to the boundary of a robot-probability mask.

    Args:
        prob: (h, w) probabilities covering the image (e.g. a network's stride-4 mask); resized
            bilinearly with the pixel-centre convention to ``size``.
        size: (W, H) of the pixel frame the distances are measured in.
        threshold: the probability level that is the boundary.
        smooth_px: Gaussian smoothing of the distance field (sigma, pixels): it removes the
            distance transform's half-pixel steps so its gradient is usable; 0 = none.
    Returns:
        (H, W) float32.
    """
    W, H = size
    p = np.asarray(prob, dtype=np.float32)
    if p.ndim != 2:
        raise ValueError(f"prob must be (h, w), got shape {p.shape}")
    if p.shape != (H, W):
        p = cv2.resize(p, (W, H), interpolation=cv2.INTER_LINEAR)
    return _signed_distance((p >= threshold).astype(np.uint8), smooth_px)


def _signed_distance(inside: np.ndarray, smooth_px: float) -> np.ndarray:
    """(H, W) float32 signed distance (positive inside) to the boundary of a uint8 0/1 mask."""
    H, W = inside.shape
    if not inside.any():
        return np.full((H, W), -float(max(W, H)), dtype=np.float32)
    # Distance of each inside pixel to the nearest outside pixel and vice versa; the boundary lies
    # half-way between the two, hence the 0.5 offsets. The image edge is not a boundary: pad by replication.
    pad = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    d_in = cv2.distanceTransform(pad, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    d_out = cv2.distanceTransform(1 - pad, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    sdf = np.where(inside > 0, d_in - 0.5, 0.5 - d_out).astype(np.float32)
    if smooth_px > 0:
        sdf = cv2.GaussianBlur(sdf, (0, 0), smooth_px)
    return sdf


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of (H, W) ``img`` at (N, 2) pixels; NaN outside the image."""
    H, W = img.shape
    u, v = uv[:, 0], uv[:, 1]
    inside = (u >= 0) & (v >= 0) & (u <= W - 1) & (v <= H - 1)
    u0 = np.clip(np.floor(u), 0, W - 2).astype(np.int64)
    v0 = np.clip(np.floor(v), 0, H - 2).astype(np.int64)
    a, b = np.clip(u - u0, 0, 1), np.clip(v - v0, 0, 1)
    out = ((1 - a) * (1 - b) * img[v0, u0] + a * (1 - b) * img[v0, u0 + 1]
           + (1 - a) * b * img[v0 + 1, u0] + a * b * img[v0 + 1, u0 + 1])
    return np.where(inside, out, np.nan)


@dataclass
class SilhouetteObservation:
    """One frame for :func:`fit_silhouettes`: the robot's link poses and the measured outline.

    Attributes:
        T_base_link: (L, 4, 4) link poses (forward kinematics at the image stamp), ``mesh.links`` order.
        sdf: (H, W) signed distance to the measured mask's boundary, pixels, positive inside.
        K: (3, 3) pinhole intrinsics of the pixel frame of ``sdf`` (undistorted).
        weight: relative weight of this frame's points.
        smooth_px: the smoothing ``sdf`` was made with (the rendered outline gets the same).
        link_valid: (L,) bool, links whose pose is known (others are not drawn), or None for all.
    """

    T_base_link: np.ndarray
    sdf: np.ndarray
    K: np.ndarray
    weight: float = 1.0
    smooth_px: float = 1.0
    link_valid: np.ndarray | None = None

    def __post_init__(self):
        self.sdf = np.asarray(self.sdf, dtype=np.float32)
        if self.sdf.ndim != 2:
            raise ValueError(f"sdf must be (H, W), got {self.sdf.shape}")
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.T_base_link = np.asarray(self.T_base_link, dtype=np.float64)
        gy, gx = np.gradient(self.sdf)  # d/d(row), d/d(col): pixel units
        self._grad_u, self._grad_v = gx.astype(np.float32), gy.astype(np.float32)

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the pixel frame."""
        return self.sdf.shape[1], self.sdf.shape[0]

    @classmethod
    def from_mask(cls, prob: np.ndarray, T_base_link: np.ndarray, K_input: np.ndarray, input_size: tuple[int, int],
                  *, scale: float = 1.0, threshold: float = 0.5, smooth_px: float = 1.0,
                  weight: float = 1.0) -> "SilhouetteObservation":
        """From a network's mask ``prob`` covering its ``input_size`` image, whose intrinsics are ``K_input``.

        ``K_input`` is the (undistorted) camera ``K`` mapped into the network input
        (``ImageTransform.scale_intrinsics``). ``scale``: the fit's pixel frame relative to the
        network input (0.5: half its width and height, a quarter of the work per frame).
        """
        W, H = max(1, round(input_size[0] * scale)), max(1, round(input_size[1] * scale))
        sx, sy = W / input_size[0], H / input_size[1]
        # pixel-centre convention: u' = (u + 0.5) * s - 0.5
        S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        return cls(T_base_link=T_base_link, sdf=mask_signed_distance(prob, (W, H), threshold=threshold,
                                                                    smooth_px=smooth_px),
                   K=S @ np.asarray(K_input, dtype=np.float64), weight=weight, smooth_px=smooth_px)

    def sample(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bilinear (distance, d/du, d/dv) at (N, 2) pixels; NaN outside the image."""
        return _bilinear(self.sdf, uv), _bilinear(self._grad_u, uv), _bilinear(self._grad_v, uv)


@dataclass(frozen=True)
class SilhouetteFitConfig:
    iterations: int = 15  # Gauss-Newton iterations at most
    outline_px: float = 1.5  # a vertex within this distance of the rendered outline is an outline point
    max_distance_px: float = 10.0  # outline points farther than this from the measured boundary are ignored
    huber_px: float = 1.5  # Huber loss threshold on the point-to-boundary distance
    border_px: float = 2.0  # outline points this close to the image border are ignored (the mask is cut there)
    max_points_per_frame: int = 600  # outline points per frame at most (evenly subsampled)
    min_points: int = 50  # fewer usable points over all frames: no fit
    damping: float = 1e-3  # Levenberg-Marquardt damping, relative to the normal matrix diagonal
    step_tol: float = 1e-6  # stop when the step is below this (metres / radians)
    near: float = 0.01  # metres: faces closer to the camera plane are not drawn


@dataclass
class SilhouetteFitResult:
    T_camera_base: np.ndarray  # (4, 4) fitted pose
    ok: bool  # enough points throughout; False: T_camera_base is the initial pose
    iterations: int
    num_points: int  # outline points used in the last iteration
    rms_px: float  # RMS point-to-boundary distance of the used points, last iteration
    initial_rms_px: float  # the same at the initial pose
    normal_matrix: np.ndarray | None = None  # (6, 6) J^T W J of the last iteration (unit pixel noise)
    detail: str = ""


def _outline_points(mesh: SilhouetteMesh, obs: SilhouetteObservation, T: np.ndarray, cfg: SilhouetteFitConfig):
    """Mesh vertices on the rendered outline of ``obs``: camera-frame points (N, 3), pixels (N, 2) and
    the rendered silhouette's own signed distance at them (N,), processed as the measured one."""
    P = mesh.camera_points(T, obs.T_base_link)
    uv, front = _project(P, obs.K, cfg.near)
    if obs.link_valid is not None:
        front &= np.asarray(obs.link_valid, dtype=bool)[mesh.vertex_link]
    W, H = obs.size
    m = cfg.border_px
    ok = front & (uv[:, 0] >= m) & (uv[:, 1] >= m) & (uv[:, 0] <= W - 1 - m) & (uv[:, 1] <= H - 1 - m)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return P[:0], uv[:0], uv[:0, 0]
    # Work in the robot's bounding box (grown by the smoothing's reach), not the whole image.
    grow = int(np.ceil(3 * obs.smooth_px + cfg.outline_px)) + 2
    lo = np.maximum(np.floor(uv[front].min(axis=0)).astype(np.int64) - grow, 0)
    hi = np.minimum(np.ceil(uv[front].max(axis=0)).astype(np.int64) + grow, [W - 1, H - 1])
    shift = lo.astype(np.float64)
    rendered = _fill(mesh, uv - shift, front, (int(hi[0] - lo[0] + 1), int(hi[1] - lo[1] + 1)))
    if not rendered.any():
        return P[:0], uv[:0], uv[:0, 0]
    # The rendered silhouette through the same distance transform and smoothing as the measured
    # mask: at the true pose both fields agree at every vertex, whatever their discretisation.
    rendered_sdf = _signed_distance(rendered, obs.smooth_px)
    local = uv[idx] - shift
    ui = np.clip(np.round(local[:, 0]).astype(np.int64), 0, rendered.shape[1] - 1)
    vi = np.clip(np.round(local[:, 1]).astype(np.int64), 0, rendered.shape[0] - 1)
    on = np.abs(rendered_sdf[vi, ui]) <= cfg.outline_px
    idx, local = idx[on], local[on]
    if len(idx) > cfg.max_points_per_frame:
        pick = np.linspace(0, len(idx) - 1, cfg.max_points_per_frame).round().astype(np.int64)
        idx, local = idx[pick], local[pick]
    return P[idx], uv[idx], _bilinear(rendered_sdf, local)


def _residuals(mesh, observations, T, cfg):
    """Stacked residuals (N,), Jacobian (N, 6) and weights (N,) over all observations.

    A frame's weights sum to its ``weight``: the points along one outline share that mask's errors,
    so a frame counts once however many of its points are used."""
    rs, Js, ws = [], [], []
    for obs in observations:
        P, uv, d_rendered = _outline_points(mesh, obs, T, cfg)
        if len(P) == 0:
            continue
        d, gu, gv = obs.sample(uv)
        d = d - d_rendered  # zero where the rendered outline lies on the measured one
        use = np.isfinite(d) & (np.abs(d) <= cfg.max_distance_px)
        if not use.any():
            continue
        P, d, gu, gv = P[use], d[use], gu[use], gv[use]
        x, y, z = P[:, 0], P[:, 1], P[:, 2]
        fx, fy = obs.K[0, 0], obs.K[1, 1]
        # d(distance)/dP = grad . d(u, v)/dP
        gP = np.stack([gu * fx / z, gv * fy / z, -(gu * fx * x + gv * fy * y) / (z * z)], axis=1)
        # P' = Exp(xi) P: dP/d(rho, phi) = [I, -[P]x]  ->  d/dphi (g . (phi x P)) = P x g
        J = np.concatenate([gP, np.cross(P, gP)], axis=1)
        rs.append(d)
        Js.append(J)
        ws.append(np.full(len(d), obs.weight / len(d)))
    if not rs:
        return np.zeros(0), np.zeros((0, 6)), np.zeros(0)
    return np.concatenate(rs), np.concatenate(Js), np.concatenate(ws)


def _robust_cost(r: np.ndarray, w: np.ndarray, delta: float) -> float:
    """Weighted Huber cost of residuals ``r`` (pixels); weights ``w``."""
    if len(r) == 0:
        return float("inf")
    a = np.abs(r)
    rho = np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))
    return float(np.sum(w * rho))


def _huber_weights(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 1.0, delta / np.maximum(a, 1e-12))


@dataclass(frozen=True)
class PosePrior:
    """A Gaussian prior on ``T_camera_base``: ``T = Exp(xi) T_prior`` with ``xi ~ N(0, diag(s_m^2 I, s_rad^2 I))``.

    For a left perturbation of ``T_camera_base`` this is the same as an isotropic prior of
    ``sigma_m`` on the camera's position and ``sigma_rad`` on its orientation (the translation
    part of ``xi`` is minus the rotated camera displacement).
    """

    T_camera_base: np.ndarray
    sigma_m: float
    sigma_rad: float

    def information(self) -> np.ndarray:
        return np.diag([self.sigma_m ** -2] * 3 + [self.sigma_rad ** -2] * 3)

    def residual(self, T: np.ndarray) -> np.ndarray:
        """(6,) ``xi`` with ``T = Exp(xi) T_prior`` (first order)."""
        D = T @ se3.invert_transform(self.T_camera_base)
        return np.concatenate([D[:3, 3], se3.matrix_to_rvec(D[:3, :3])])


def fit_silhouettes(T_init, observations: Sequence[SilhouetteObservation], mesh: SilhouetteMesh,
                    config: SilhouetteFitConfig = SilhouetteFitConfig(), *,
                    prior: PosePrior | None = None) -> SilhouetteFitResult:
    """Refine ``T_camera_base`` so the meshes' outlines meet the measured boundaries in every observation.

    The cost is, per frame, the mean Huber loss of its outline distances divided by ``sigma^2``
    (``sigma``: the robust spread of the distances at the start, fixed during the fit), summed over
    frames, plus the ``prior`` term. Minimised by Levenberg-Marquardt.

    Args:
        T_init: (4, 4) starting ``T_camera_base`` (base frame -> camera optical frame), close enough
            that the outlines overlap (a few pixels to ``max_distance_px``): e.g. a keypoint PnP pose.
        observations: frames of one static camera (each with its own link poses and mask).
        mesh: the robot's meshes (``mesh.links`` order matches each ``T_base_link``).
        prior: optional Gaussian prior on the pose (e.g. the keypoint-fused pose).
    Returns:
        :class:`SilhouetteFitResult`; ``ok`` False (with ``detail``) when too few outline points
        meet a measured boundary. ``normal_matrix`` is the cost's Gauss-Newton Hessian: its inverse
        is the pose covariance under frame-level independence.
    """
    cfg = config
    T = np.asarray(T_init, dtype=np.float64).copy()
    r, J, w = _residuals(mesh, observations, T, cfg)
    initial_rms = float(np.sqrt(np.mean(r ** 2))) if len(r) else float("nan")
    if len(r) < cfg.min_points:
        return SilhouetteFitResult(T_camera_base=T, ok=False, iterations=0, num_points=len(r), rms_px=initial_rms,
                                   initial_rms_px=initial_rms,
                                   detail=f"only {len(r)} outline points meet a measured boundary "
                                          f"(need {cfg.min_points})")
    sigma = max(1.4826 * float(np.median(np.abs(r))), 0.25)
    scale = 1.0 / sigma ** 2
    L = prior.information() if prior is not None else np.zeros((6, 6))

    def total_cost(r_, w_, T_):
        c = scale * _robust_cost(r_, w_, cfg.huber_px)
        if prior is not None:
            xi = prior.residual(T_)
            c += 0.5 * float(xi @ L @ xi)
        return c

    cost = total_cost(r, w, T)
    lam = cfg.damping
    it = 0
    H = None
    for it in range(1, cfg.iterations + 1):
        wh = scale * w * _huber_weights(r, cfg.huber_px)
        H = J.T @ (J * wh[:, None]) + L
        g = J.T @ (wh * r)
        if prior is not None:
            g = g + L @ prior.residual(T)
        try:
            step = -np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), g)
        except np.linalg.LinAlgError:
            break
        T_new = se3_exp(step) @ T
        r_new, J_new, w_new = _residuals(mesh, observations, T_new, cfg)
        cost_new = total_cost(r_new, w_new, T_new) if len(r_new) >= cfg.min_points else np.inf
        # The outline points are chosen anew at every pose; each frame's term is a mean over its
        # points, so costs stay comparable. A step that raises the cost is retried with more damping.
        if cost_new <= cost:
            T, r, J, w, cost = T_new, r_new, J_new, w_new, cost_new
            lam = max(lam / 10.0, 1e-9)
            if np.linalg.norm(step) < cfg.step_tol:
                break
        else:
            lam *= 10.0
            if lam > 1e6:
                break
    wh = scale * w * _huber_weights(r, cfg.huber_px)
    H = J.T @ (J * wh[:, None]) + L
    rms = float(np.sqrt(np.mean(r ** 2)))
    return SilhouetteFitResult(T_camera_base=T, ok=True, iterations=it, num_points=len(r), rms_px=rms,
                               initial_rms_px=initial_rms, normal_matrix=H)


# --------------------------------------------------------------------------------------------
# Static camera: many frames' masks -> one refined pose
# --------------------------------------------------------------------------------------------
class MaskResampler:
    """Maps a network's mask into the *fit frame*: the camera's undistorted image at ``fit_width``.

    The mask covers the network input, which is ``input_transform`` of the raw (distorted) camera
    image. One ``cv2.remap`` per mask: fit pixel -> undistorted camera pixel -> distorted camera
    pixel -> network-input pixel -> mask cell (pixel-centre conventions throughout).

    Attributes:
        K: (3, 3) intrinsics of the fit frame (distortion-free).
        size: (W, H) of the fit frame.
    """

    def __init__(self, camera: PinholeCamera, input_transform: ImageTransform, mask_shape: tuple[int, int], *,
                 fit_width: int = 160):
        fit_w = int(max(8, min(fit_width, camera.width)))
        fit_h = int(max(8, round(camera.height * fit_w / camera.width)))
        to_fit = camera.resize_transform(fit_w, fit_h)
        self.K = to_fit.scale_intrinsics(camera.K)
        self.size = (fit_w, fit_h)
        self.camera, self.input_transform, self.mask_shape = camera, input_transform, tuple(mask_shape)
        if camera.has_distortion:
            if camera.distortion_model == "equidistant":
                mx, my = cv2.fisheye.initUndistortRectifyMap(camera.K, camera.D.reshape(4, 1), np.eye(3), self.K,
                                                             self.size, cv2.CV_32FC1)
            else:
                mx, my = cv2.initUndistortRectifyMap(camera.K, camera.D, None, self.K, self.size, cv2.CV_32FC1)
            cam_u, cam_v = mx.astype(np.float64), my.astype(np.float64)
        else:
            cam = to_fit.invert_coords(np.stack(np.meshgrid(np.arange(fit_w, dtype=np.float64),
                                                            np.arange(fit_h, dtype=np.float64)), axis=-1))
            cam_u, cam_v = cam[..., 0], cam[..., 1]
        inp = input_transform.apply_coords(np.stack([cam_u, cam_v], axis=-1))
        h_m, w_m = self.mask_shape
        # the mask's cells tile the network input: cell = (input + 0.5) * cells / pixels - 0.5
        self._map_u = ((inp[..., 0] + 0.5) * w_m / input_transform.out_width - 0.5).astype(np.float32)
        self._map_v = ((inp[..., 1] + 0.5) * h_m / input_transform.out_height - 0.5).astype(np.float32)

    def matches(self, camera: PinholeCamera, input_transform: ImageTransform, mask_shape) -> bool:
        return camera is self.camera and input_transform == self.input_transform and tuple(mask_shape) == self.mask_shape

    def __call__(self, prob: np.ndarray) -> np.ndarray:
        """(h, w) mask probabilities -> (H, W) float32 in the fit frame (0 outside the camera image)."""
        return cv2.remap(np.asarray(prob, dtype=np.float32), self._map_u, self._map_v, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


@dataclass(frozen=True)
class SilhouetteRefineConfig:
    enabled: bool = True  # refine the fused pose with the robot's outline (needs a model with a mask head)
    mesh_faces: int = 3000  # the robot's visual meshes are decimated to about this many triangles
    fit_width: int = 160  # width of the fit frame, pixels (the mask's detail: a stride-4 mask of a 320 px input)
    mask_threshold: float = 0.5  # mask probability that is the robot's outline
    smooth_px: float = 1.0  # smoothing of the distance fields, fit-frame pixels
    max_frames: int = 80  # frames kept (the oldest leaves); each costs ~0.25 MB and ~30 ms of each fit
    min_frames: int = 10  # frames needed for the first refinement
    growth: float = 2.0  # while the window fills, refine again once the kept frames grew by this factor
    # since the last fit (10, 20, 40, 80 frames): each fit's cost grows with its frames, so fitting every
    # few frames would keep a core busy for little new evidence
    every_frames: int = 40  # once the window is full: refine again after this many new frames
    min_joint_distance: float = 0.05  # rad (L2): a frame this close to a kept one is not kept
    max_correction_m: float = 0.20  # a refined pose farther than this from the keypoint pose is refused...
    max_correction_deg: float = 8.0  # ...or rotated more than this (the shipped model's fused keypoint pose is
    # off by 3-13 cm on sim bags: a tighter gate refuses the fits that correct it)
    max_rms_px: float = 2.5  # ...or with an RMS outline distance above this (fit-frame pixels)
    keypoint_prior_m: float = 0.20  # the keypoint-fused pose enters the fit as a prior of this 1-sigma position...
    keypoint_prior_deg: float = 5.0  # ...and rotation (as loose as its real error, biased per view, not its own
    # smaller sigma: 3 cm / 1 deg held 3 sim bags at 25-68 mm, this at 9-23 mm); 0: no prior
    fit: SilhouetteFitConfig = SilhouetteFitConfig(iterations=30)  # the solver


@dataclass
class RefinedPose:
    T_camera_base: np.ndarray  # (4, 4)
    covariance: np.ndarray  # (6, 6) left perturbation (core.pnp convention)
    num_frames: int  # frames in the fit
    rms_px: float  # RMS outline distance, fit-frame pixels
    correction_m: float  # camera position change from the keypoint pose
    correction_deg: float


class SilhouetteRefiner:
    """Keeps the masks of diverse frames of a static camera and refines a pose with them.

    Feed it frames with :meth:`add`; when :meth:`due`, call :meth:`refine` with the keypoint-fused
    pose. :attr:`pose` is the last accepted refinement (None until one is). Not thread-safe.

    The covariance treats each *frame* as one independent measurement of the outline (the points
    along one outline share the mask's errors), with the keypoint pose as a prior (see fit_silhouettes).
    """

    def __init__(self, mesh: SilhouetteMesh, config: SilhouetteRefineConfig = SilhouetteRefineConfig()):
        self.mesh = mesh
        self.config = config
        self._obs: list[tuple[np.ndarray, SilhouetteObservation]] = []
        self._resampler: MaskResampler | None = None
        self._new = 0
        self.pose: RefinedPose | None = None
        self.refinements = 0  # accepted refinements since the last reset
        self._fit_frames = 0  # frames in the last fit started since the last reset (0: none yet)
        self.last_detail = ""  # why the last refinement was refused, or ""
        self._generation = 0  # increments at every reset: results of older jobs are dropped

    @property
    def num_frames(self) -> int:
        return len(self._obs)

    def reset(self) -> None:
        self._obs.clear()
        self._generation += 1
        self._new = 0
        self.pose = None
        self.refinements = 0
        self._fit_frames = 0
        self.last_detail = ""

    def add(self, prob: np.ndarray, camera: PinholeCamera, input_transform: ImageTransform,
            T_base_link: np.ndarray, joint_vector, *, link_valid: np.ndarray | None = None) -> bool:
        """Keep a frame's mask (``prob`` covering the network input that ``input_transform`` makes of
        the camera image) with its link poses ``T_base_link`` (L, 4, 4, ``mesh.links`` order).

        Returns False when the frame was not kept (too close in joint space to a kept one).
        """
        cfg = self.config
        q = np.asarray(joint_vector, dtype=np.float64).reshape(-1)
        if any(k.shape == q.shape and np.linalg.norm(k - q) < cfg.min_joint_distance for k, _ in self._obs):
            return False
        prob = np.asarray(prob)
        if self._resampler is None or not self._resampler.matches(camera, input_transform, prob.shape):
            self._resampler = MaskResampler(camera, input_transform, prob.shape, fit_width=cfg.fit_width)
        r = self._resampler
        sdf = mask_signed_distance(r(prob), r.size, threshold=cfg.mask_threshold, smooth_px=cfg.smooth_px)
        self._obs.append((q, SilhouetteObservation(T_base_link=T_base_link, sdf=sdf, K=r.K, smooth_px=cfg.smooth_px,
                                                   link_valid=link_valid)))
        if len(self._obs) > cfg.max_frames:
            self._obs.pop(0)
        self._new += 1
        return True

    def due(self) -> bool:
        """Enough frames, and enough new ones since the last refinement (see ``growth``, ``every_frames``)."""
        cfg = self.config
        n = len(self._obs)
        if n < cfg.min_frames or self._new == 0:
            return False
        if self._fit_frames == 0 or self._new >= cfg.every_frames:
            return True
        return n < cfg.max_frames and n >= cfg.growth * self._fit_frames  # the window is still filling

    def start(self, T_keypoints: np.ndarray) -> "RefineJob":
        """A refinement of the frames kept now, from the last accepted pose (or ``T_keypoints``, the
        keypoint-fused pose). Run it (:meth:`RefineJob.run`, any thread) and hand the result to
        :meth:`finish`; frames added meanwhile wait for the next one."""
        cfg = self.config
        self._new = 0
        self._fit_frames = len(self._obs)
        T_kp = np.asarray(T_keypoints, dtype=np.float64).copy()
        start = T_kp
        if self.pose is not None and _pose_change(self.pose.T_camera_base, T_kp) <= (cfg.max_correction_m,
                                                                                    cfg.max_correction_deg):
            start = self.pose.T_camera_base
        return RefineJob(mesh=self.mesh, observations=tuple(o for _, o in self._obs), T_start=start,
                         T_keypoints=T_kp, config=cfg, generation=self._generation)

    def finish(self, job: "RefineJob", result: SilhouetteFitResult) -> RefinedPose | None:
        """Check ``job``'s result and accept it as :attr:`pose`; None when refused (see
        :attr:`last_detail`; a previous accepted pose stays) or when the refiner was reset since."""
        cfg = self.config
        if job.generation != self._generation:
            return None
        dm, ddeg = _pose_change(result.T_camera_base, job.T_keypoints)
        if not result.ok:
            self.last_detail = result.detail
        elif result.rms_px > cfg.max_rms_px:
            self.last_detail = f"outline RMS {result.rms_px:.2f} px exceeds {cfg.max_rms_px:g} px"
        elif dm > cfg.max_correction_m or ddeg > cfg.max_correction_deg:
            self.last_detail = (f"outline fit moved the camera {dm * 1e3:.0f} mm / {ddeg:.1f} deg from the keypoint "
                                f"pose (limits {cfg.max_correction_m * 1e3:.0f} mm / {cfg.max_correction_deg:g} deg)")
        else:
            cov = _covariance(result)
            if cov is None:
                self.last_detail = "outline fit is degenerate (singular normal matrix)"
            else:
                self.last_detail = ""
                self.refinements += 1
                self.pose = RefinedPose(T_camera_base=result.T_camera_base, covariance=cov,
                                        num_frames=len(job.observations), rms_px=result.rms_px, correction_m=dm,
                                        correction_deg=ddeg)
                return self.pose
        return None

    def refine(self, T_keypoints: np.ndarray) -> RefinedPose | None:
        """:meth:`start`, run and :meth:`finish` in this thread."""
        job = self.start(T_keypoints)
        return self.finish(job, job.run())


@dataclass(frozen=True, eq=False)
class RefineJob:
    """One outline refinement, self-contained (the observations are not modified once made)."""

    mesh: SilhouetteMesh
    observations: tuple[SilhouetteObservation, ...]
    T_start: np.ndarray
    T_keypoints: np.ndarray
    config: SilhouetteRefineConfig
    generation: int

    def run(self) -> SilhouetteFitResult:
        cfg = self.config
        prior = None
        if cfg.keypoint_prior_m > 0 and cfg.keypoint_prior_deg > 0:
            prior = PosePrior(T_camera_base=self.T_keypoints, sigma_m=cfg.keypoint_prior_m,
                              sigma_rad=np.radians(cfg.keypoint_prior_deg))
        return fit_silhouettes(self.T_start, self.observations, self.mesh, cfg.fit, prior=prior)


def _pose_change(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """(camera position change in metres, rotation change in degrees) between two ``T_camera_base``."""
    A, B = se3.invert_transform(T_a), se3.invert_transform(T_b)
    return se3.translation_error(A, B), se3.rotation_error_deg(A, B)


def _covariance(res: SilhouetteFitResult) -> np.ndarray | None:
    """(6, 6) pose covariance: the inverse of the fit's Hessian (frame-level independence, see fit_silhouettes)."""
    H = res.normal_matrix
    if H is None or not np.all(np.isfinite(H)):
        return None
    try:
        cov = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return None
    return cov if np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0) else None
