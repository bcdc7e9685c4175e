"""Heatmaps <-> keypoints: sub-pixel decoding, coordinate maps, and Gaussian training targets.

Pixel convention (OpenCV's, as in :mod:`ctrnet_ros.core.camera`): the *centre* of heatmap cell
``(row i, column j)`` is at ``(u, v) = (j, i)``, and a map of size ``(w, h)`` spans
``[-0.5, w - 0.5] x [-0.5, h - 0.5]``. A heatmap at stride ``s`` covers the network input exactly
(input size = s x heatmap size), so cell edges line up with input-pixel edges and

    u_in = (u_hm + 0.5) * s - 0.5          u_hm = (u_in + 0.5) / s - 0.5

Coordinates are ``(..., 2)`` with ``[..., 0] = u`` (x, column) and ``[..., 1] = v`` (y, row).

Decoding (all torch ops that export to ONNX opset 18 with a dynamic batch axis):

* ``"quadratic"`` (default): argmax cell, then a per-axis parabola through the *log* heatmap at the
  argmax and its two neighbours. The log of a Gaussian is a paraboloid, so for Gaussian-shaped
  peaks this is exact to float precision, also next to borders (the 3-cell stencil is shifted
  inwards there). The offset is clamped to half a cell (one cell outwards on the border cells),
  since the nearest cell of a symmetric unimodal peak is its argmax. For logits beyond sigmoid
  saturation (z > ~15) the log-probabilities are computed accurately but are no longer quadratic
  (``log p ~ -exp(-z)``): the fit then errs by a few hundredths of a cell, instead of failing.
* ``"soft_argmax"``: expectation of the cell coordinates under ``softmax(beta * scores)`` over
  the whole map (differentiable; what CtRNet trains through). Biased towards the map centre when
  the scores have background mass or the peak is truncated by a border; use for training losses,
  prefer ``"quadratic"`` at inference.
* ``"argmax"``: integer cell centres.

Probabilities below 1e-4 are floored before the log (they are float32 noise after a sigmoid),
so only the cells that carry the peak's shape enter the fit. Confidence is the probability at the
argmax cell, in [0, 1] (``sigmoid`` of logits, or the belief value itself).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch

__all__ = [
    "DECODE_METHODS",
    "decode_heatmaps",
    "soft_argmax_2d",
    "local_soft_argmax",
    "refine_quadratic",
    "peak_sharpness",
    "heatmap_to_input_coords",
    "input_to_heatmap_coords",
    "render_gaussian_heatmaps",
]

DECODE_METHODS = ("quadratic", "soft_argmax", "argmax")

Stride = Union[float, Sequence[float]]
Coords = Union[torch.Tensor, np.ndarray]

# Probabilities are floored here before the log. Below it a cell carries no shape information:
# float32 sigmoids (ONNX Runtime's in particular) are accurate to ~6e-8 absolute, not relative, so
# the log of a 1e-7 neighbour is noise that would swing the parabola of a knife-edge peak. For
# Gaussian peaks (sigma >= 1 cell, peak >= 0.5) every stencil cell stays far above the floor, border
# stencils included.
_PROB_FLOOR = 1e-4
# a 3-cell stencil of the log heatmap counts as flat when |second difference| is below this
# fraction of the sum of its |values| (a few float32 roundings), or below _TINY
_REL_CURVATURE = 1e-6
_TINY = 1e-30


def _stride_pair(stride: Stride, like: Coords) -> Coords:
    """Scalar stride, or (s_x, s_y) as a broadcastable array/tensor of the same kind as ``like``."""
    if np.isscalar(stride):
        return float(stride)
    pair = [float(s) for s in stride]
    if len(pair) != 2:
        raise ValueError(f"stride must be a scalar or (s_x, s_y), got {stride!r}")
    if isinstance(like, torch.Tensor):
        return torch.tensor(pair, dtype=like.dtype, device=like.device)
    return np.asarray(pair, dtype=np.result_type(like, np.float64))


def heatmap_to_input_coords(uv_hm: Coords, stride: Stride) -> Coords:
    """``(..., 2)`` heatmap pixels -> ``(..., 2)`` network-input pixels: ``(uv + 0.5) * s - 0.5``.

    Works on torch tensors and numpy arrays alike. ``stride`` is a scalar or ``(s_x, s_y)``.
    """
    return (uv_hm + 0.5) * _stride_pair(stride, uv_hm) - 0.5


def input_to_heatmap_coords(uv_in: Coords, stride: Stride) -> Coords:
    """``(..., 2)`` network-input pixels -> ``(..., 2)`` heatmap pixels: ``(uv + 0.5) / s - 0.5``."""
    return (uv_in + 0.5) / _stride_pair(stride, uv_in) - 0.5


def _check_heatmaps(heatmaps: torch.Tensor) -> None:
    if heatmaps.dim() != 4:
        raise ValueError(f"expected heatmaps of shape (B, K, h, w), got {tuple(heatmaps.shape)}")


def soft_argmax_2d(scores: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Spatial soft-argmax: ``(B, K, h, w)`` scores -> ``(B, K, 2)`` expected (u, v) in heatmap pixels.

    ``uv = sum_ij softmax(beta * scores)_ij * (j, i)``; ``beta`` is an inverse temperature (larger
    is closer to the hard argmax). Differentiable in ``scores``.
    """
    _check_heatmaps(scores)
    b, k, h, w = scores.shape
    weights = torch.softmax(scores.flatten(2) * beta, dim=-1).view(b, k, h, w)
    u = torch.arange(w, dtype=scores.dtype, device=scores.device)
    v = torch.arange(h, dtype=scores.dtype, device=scores.device)
    return torch.stack([(weights.sum(dim=2) * u).sum(-1), (weights.sum(dim=3) * v).sum(-1)], dim=-1)


def local_soft_argmax(heatmaps: torch.Tensor, *, logits: bool = False, radius: int = 3) -> torch.Tensor:
    """Probability-weighted mean cell position in a window around the argmax: ``(B, K, h, w)`` -> ``(B, K, 2)``.

    A training-time decoding (self-supervised refresh) whose gradient reaches every cell of the
    ``(2 radius + 1)^2`` window, unlike ``"quadratic"`` (three cells, offset clamped to half a cell),
    and which, unlike :func:`soft_argmax_2d`, ignores background mass elsewhere in the map. For a
    symmetric peak away from the borders it agrees with the quadratic fit.
    """
    _check_heatmaps(heatmaps)
    b, k, h, w = heatmaps.shape
    idx = heatmaps.flatten(2).argmax(dim=-1)  # (B, K)
    row = torch.div(idx, w, rounding_mode="floor")
    col = idx - row * w
    u = torch.arange(w, device=heatmaps.device)
    v = torch.arange(h, device=heatmaps.device)
    in_u = (u[None, None, :] - col[..., None]).abs() <= radius  # (B, K, w)
    in_v = (v[None, None, :] - row[..., None]).abs() <= radius  # (B, K, h)
    window = (in_v[..., :, None] & in_u[..., None, :]).to(heatmaps.dtype)  # (B, K, h, w)
    p = (torch.sigmoid(heatmaps) if logits else heatmaps.clamp_min(0.0)) * window
    p = p / p.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    uu = (p.sum(dim=-2) * u.to(heatmaps.dtype)).sum(-1)
    vv = (p.sum(dim=-1) * v.to(heatmaps.dtype)).sum(-1)
    return torch.stack([uu, vv], dim=-1)


def _axis_fit(flat: torch.Tensor, base: torch.Tensor, pos: torch.Tensor, size: int,
              step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Parabola through a 3-cell stencil of the log heatmap along one axis.

    Args:
        flat: ``(B, K, h*w)`` log heatmap.
        base: ``(B, K)`` flat index of the argmax cell with this axis' coordinate removed.
        pos: ``(B, K)`` argmax coordinate along this axis (int64).
        size: number of cells along this axis (>= 3).
        step: flat-index step between neighbours along this axis (1 for u, w for v).

    Returns:
        ``offset`` ``(B, K)``: the peak's offset from the argmax cell centre, in cells (0 where the
        stencil is not a maximum).
        ``curvature`` ``(B, K)``: second difference of the log heatmap (``-1/sigma^2`` for a Gaussian).
    """
    centre = pos.clamp(1, size - 2)  # stencil centre, shifted inwards at the borders
    idx = torch.stack([base + (centre - 1) * step, base + centre * step, base + (centre + 1) * step], dim=-1)
    l_minus, l_centre, l_plus = torch.gather(flat, 2, idx).unbind(-1)  # (B, K) each
    curvature = l_minus - 2.0 * l_centre + l_plus  # < 0 at a maximum
    # Relative test: saturated peaks (log p ~ -1e-12) are tiny but accurately represented and
    # still fit; a stencil whose curvature is within rounding of its values is treated as flat.
    scale = l_minus.abs() + l_centre.abs() + l_plus.abs()
    is_max = curvature < -(_REL_CURVATURE * scale + _TINY)
    safe = torch.where(is_max, curvature, torch.full_like(curvature, -1.0))
    vertex = torch.where(is_max, 0.5 * (l_minus - l_plus) / safe, torch.zeros_like(curvature))
    offset = vertex + (centre - pos).to(flat.dtype)
    # The nearest cell to a symmetric unimodal peak is its argmax: |offset| <= 0.5, except that a
    # peak beyond the outermost cell centre may lie up to one cell outside it.
    low = torch.where(pos == 0, torch.full_like(offset, -1.0), torch.full_like(offset, -0.5))
    high = torch.where(pos == size - 1, torch.full_like(offset, 1.0), torch.full_like(offset, 0.5))
    return torch.minimum(torch.maximum(offset, low), high), curvature


def _log_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(z))``, accurate also for large ``z`` *after* ONNX export.

    ``min(z, 0) - log1p(exp(-|z|))``; ONNX has no Log1p and ``log(1 + e)`` rounds to 0 for
    ``e < 6e-8`` (z > 16.6), which would flatten saturated peaks, so small ``e`` use a series.
    """
    e = torch.exp(-logits.abs())
    series = e * (1.0 - e * (0.5 - e / 3.0))  # log1p(e) to O(e^4): error < 2.5e-9 for e < 1e-2
    log1p_e = torch.where(e < 1e-2, series, torch.log(1.0 + e))
    return torch.clamp(logits, max=0.0) - log1p_e


def _quadratic_fit(log_heatmaps: torch.Tensor, scores: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, K, h, w)`` -> uv ``(B, K, 2)`` and log-curvature ``(B, K, 2)`` at the argmax of ``scores``."""
    _check_heatmaps(log_heatmaps)
    b, k, h, w = log_heatmaps.shape
    if h < 3 or w < 3:
        raise ValueError(f"quadratic refinement needs heatmaps of at least 3x3, got {h}x{w}")
    flat = log_heatmaps.flatten(2)  # (B, K, h*w)
    idx = (flat if scores is None else scores.flatten(2)).argmax(dim=-1)  # (B, K)
    row = torch.div(idx, w, rounding_mode="floor")
    col = idx - row * w
    du, curv_u = _axis_fit(flat, row * w, col, w, 1)
    dv, curv_v = _axis_fit(flat, col, row, h, w)
    uv = torch.stack([col.to(flat.dtype) + du, row.to(flat.dtype) + dv], dim=-1)
    return uv, torch.stack([curv_u, curv_v], dim=-1)


def _log_probs(heatmaps: torch.Tensor, logits: bool) -> torch.Tensor:
    """Log-probabilities, floored at ``log(_PROB_FLOOR)``."""
    if logits:
        return _log_sigmoid(heatmaps).clamp_min(math.log(_PROB_FLOOR))
    return torch.log(heatmaps.clamp(_PROB_FLOOR, 1.0))


def refine_quadratic(log_heatmaps: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Argmax plus per-axis log-parabola refinement: ``(B, K, h, w)`` -> ``(B, K, 2)`` (u, v) heatmap pixels.

    Args:
        log_heatmaps: the *log* of a peaked, non-negative map (e.g. log-sigmoid of logits), for
            which a sampled Gaussian is exactly quadratic. Needs ``h, w >= 3``.
        scores: ``(B, K, h, w)`` map to take the argmax of (any monotonic transform of the
            heatmap, e.g. the raw logits, which never saturate); defaults to ``log_heatmaps``.
    """
    return _quadratic_fit(log_heatmaps, scores)[0]


def peak_sharpness(heatmaps: torch.Tensor, *, logits: bool = False) -> torch.Tensor:
    """How well-defined each peak's sub-pixel position is: ``(B, K, h, w)`` -> ``(B, K)``, >= 0.

    The smaller of the two axes' negated second differences of the log heatmap at the argmax:
    ``1 / sigma^2`` (in heatmap cells) for a Gaussian peak, 0 for a flat or ridge-like maximum.
    A sub-pixel position moves by about ``noise / sharpness`` cells when the log heatmap changes
    by ``noise``, so flat peaks (untrained nets, saturated sigmoids) are ill-conditioned.
    """
    _check_heatmaps(heatmaps)
    _, curvature = _quadratic_fit(_log_probs(heatmaps, logits), heatmaps)
    return (-curvature).amin(dim=-1).clamp_min(0.0)


def decode_heatmaps(
    heatmaps: torch.Tensor,
    *,
    logits: bool = False,
    method: str = "quadratic",
    beta: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps -> sub-pixel keypoints in the heatmap pixel grid, and a confidence per keypoint.

    Args:
        heatmaps: ``(B, K, h, w)``; logits if ``logits`` else probabilities in [0, 1].
        logits: whether ``heatmaps`` are logits (CtRNet) or probabilities (belief maps).
        method: one of :data:`DECODE_METHODS` (see the module docstring).
        beta: inverse temperature of ``"soft_argmax"`` (applied to the logits, or to the
            probabilities); ignored by the other methods.

    Returns:
        ``uv_hm`` ``(B, K, 2)``: (u, v) in heatmap pixels, cell (i, j) centred at (j, i); map to
        input pixels with :func:`heatmap_to_input_coords`.
        ``confidence`` ``(B, K)``: probability at the argmax cell, in [0, 1].
    """
    _check_heatmaps(heatmaps)
    if method not in DECODE_METHODS:
        raise ValueError(f"unknown decode method {method!r}; choose one of {DECODE_METHODS}")
    # The argmax is taken on the raw map: logits never saturate (sigmoid does, to 1.0 at z > 17).
    peak = heatmaps.flatten(2).amax(dim=-1)  # (B, K)
    confidence = torch.sigmoid(peak) if logits else peak.clamp(0.0, 1.0)  # probability at the argmax cell
    if method == "quadratic":
        uv = refine_quadratic(_log_probs(heatmaps, logits), scores=heatmaps)
    elif method == "soft_argmax":
        uv = soft_argmax_2d(heatmaps, beta=beta)
    else:
        w = heatmaps.shape[-1]
        idx = heatmaps.flatten(2).argmax(dim=-1)
        row = torch.div(idx, w, rounding_mode="floor")
        uv = torch.stack([idx - row * w, row], dim=-1).to(heatmaps.dtype)
    return uv, confidence


def render_gaussian_heatmaps(
    uv_in: torch.Tensor,
    visible: torch.Tensor,
    hm_size: tuple[int, int],
    stride: Stride,
    sigma: float,
) -> torch.Tensor:
    """Gaussian target heatmaps for training.

    Args:
        uv_in: ``(B, K, 2)`` keypoints in network-input pixels (may lie outside the image; NaN is
            allowed where not visible).
        visible: ``(B, K)`` bool or {0, 1}; invisible keypoints get an all-zero map.
        hm_size: heatmap ``(w, h)`` (width first, like ``input_size``).
        stride: heatmap stride ``s`` (scalar or ``(s_x, s_y)``).
        sigma: Gaussian standard deviation in *heatmap* pixels.

    Returns:
        ``(B, K, h, w)`` in [0, 1]: ``exp(-|(j, i) - uv_hm|^2 / (2 sigma^2))``, peak 1 at the keypoint.
    """
    if uv_in.dim() != 3 or uv_in.shape[-1] != 2:
        raise ValueError(f"expected uv_in of shape (B, K, 2), got {tuple(uv_in.shape)}")
    if tuple(visible.shape) != tuple(uv_in.shape[:2]):
        raise ValueError(f"visible {tuple(visible.shape)} must be (B, K) = {tuple(uv_in.shape[:2])}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    w, h = hm_size
    dtype = uv_in.dtype if uv_in.is_floating_point() else torch.float32
    visible = visible.to(torch.bool)
    uv_hm = input_to_heatmap_coords(uv_in.to(dtype), stride)
    uv_hm = torch.where(visible[..., None], uv_hm, torch.zeros_like(uv_hm))  # no NaN from hidden points
    u = torch.arange(w, dtype=dtype, device=uv_in.device)
    v = torch.arange(h, dtype=dtype, device=uv_in.device)
    du2 = (u.view(1, 1, 1, w) - uv_hm[..., 0, None, None]) ** 2  # (B, K, 1, w)
    dv2 = (v.view(1, 1, h, 1) - uv_hm[..., 1, None, None]) ** 2  # (B, K, h, 1)
    maps = torch.exp(-(du2 + dv2) / (2.0 * sigma**2))  # (B, K, h, w)
    return maps * visible[..., None, None].to(dtype)
