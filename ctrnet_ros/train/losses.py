"""Losses of supervised pretraining: heatmaps, robot mask, decoded sub-pixel keypoints.

All losses take float32 tensors (cast under autocast) and return scalars. Shapes: B images,
K keypoints, heatmaps ``(h, w)`` at the model's heatmap stride.

Heatmaps are trained so that the network's *probabilities* equal the Gaussian targets
(:func:`~ctrnet_ros.net.decode.render_gaussian_heatmaps`) everywhere, not just so that the argmax
lands on the right cell: the quadratic decoder fits a parabola to the log-probabilities around the
peak, which is exact for a Gaussian, so matching the shape is what gives sub-pixel accuracy.
Both losses here have their pointwise optimum at ``p = target``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..net.decode import decode_heatmaps, heatmap_to_input_coords

__all__ = ["heatmap_bce_loss", "heatmap_mse_loss", "belief_stages_loss", "mask_loss", "coordinate_loss",
           "model_losses"]


def heatmap_bce_loss(logits: torch.Tensor, target: torch.Tensor, map_weight: torch.Tensor, *,
                     pos_weight: float = 20.0) -> torch.Tensor:
    """Weighted BCE-with-logits of heatmaps against soft Gaussian targets.

    Args:
        logits: ``(B, K, h, w)`` heatmap logits.
        target: ``(B, K, h, w)`` targets in [0, 1] (zero maps for keypoints outside the image).
        map_weight: ``(B, K)`` weight per map.
        pos_weight: each cell is weighted ``1 + pos_weight * target``. The weight does not depend on
            the prediction, so each cell's optimum stays ``sigmoid(logit) = target``; it only stops
            the ~5,000 background cells of a map from drowning its ~15 peak cells.

    Returns:
        scalar: per-map weighted mean BCE, averaged over maps with ``map_weight``.
    """
    cell_weight = 1.0 + pos_weight * target
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    per_map = (bce * cell_weight).sum(dim=(2, 3)) / cell_weight.sum(dim=(2, 3))  # (B, K)
    return (per_map * map_weight).sum() / map_weight.sum().clamp_min(1e-6)


def heatmap_mse_loss(probs: torch.Tensor, target: torch.Tensor, map_weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error of probability maps (belief model): ``(B, K, h, w)`` x2, ``(B, K)`` -> scalar.

    Scaled by 1000 (as DREAM does in spirit) so its size is comparable with the other losses.
    """
    per_map = (probs - target).pow(2).mean(dim=(2, 3))  # (B, K)
    return 1000.0 * (per_map * map_weight).sum() / map_weight.sum().clamp_min(1e-6)


def belief_stages_loss(beliefs: list[torch.Tensor], target: torch.Tensor, map_weight: torch.Tensor) -> torch.Tensor:
    """Intermediate supervision: :func:`heatmap_mse_loss` averaged over every stage's ``(B, K, h, w)`` maps."""
    return torch.stack([heatmap_mse_loss(b.float(), target, map_weight) for b in beliefs]).mean()


def mask_loss(logits: torch.Tensor, target: torch.Tensor, *, w_dice: float = 0.0) -> torch.Tensor:
    """Robot mask: BCE-with-logits plus ``w_dice`` x soft Dice, ``(B, 1, h, w)`` logits vs coverage in [0, 1]."""
    loss = F.binary_cross_entropy_with_logits(logits, target)
    if w_dice > 0:
        p = torch.sigmoid(logits)
        inter = (p * target).sum(dim=(1, 2, 3))
        dice = 1.0 - (2.0 * inter + 1.0) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)
        loss = loss + w_dice * dice.mean()
    return loss


def coordinate_loss(heatmaps: torch.Tensor, keypoints: torch.Tensor, weight: torch.Tensor, *, logits: bool,
                    stride: int, decode_method: str = "quadratic", max_px: float = 8.0) -> torch.Tensor:
    """L1 between decoded sub-pixel keypoints and the truth, in network-input pixels.

    Decodes with the same differentiable decoder as inference, so it trains exactly the quantity
    that PnP consumes. Errors are clipped at ``max_px``: a peak in the wrong place (argmax off by
    more than a cell or two) carries no useful gradient through a local parabola fit.

    Args:
        heatmaps: ``(B, K, h, w)`` logits (``logits=True``) or probabilities.
        keypoints: ``(B, K, 2)`` ground truth, input pixels.
        weight: ``(B, K)``; 0 for keypoints outside the image.
    """
    uv_hm, _ = decode_heatmaps(heatmaps, logits=logits, method=decode_method)
    uv = heatmap_to_input_coords(uv_hm, stride)  # (B, K, 2)
    err = (uv - keypoints).abs().sum(dim=-1).clamp(max=max_px)  # (B, K) L1 in px
    return (err * weight).sum() / weight.sum().clamp_min(1e-6)


def model_losses(model, out: dict, batch: dict, config, *, use_coord: bool) -> dict[str, torch.Tensor]:
    """All losses of one batch: ``{"loss", "heatmap", "mask", "coord"}`` (scalars, float32).

    ``loss`` is the weighted sum that is minimised; the others are the unweighted terms, for logs.

    Args:
        model: the network (``heatmaps_are_logits``, ``heatmap_stride``, ``has_mask_head``).
        out: its forward output (``heatmaps``, optional ``mask_logits`` / ``beliefs``).
        batch: collated samples of :class:`~ctrnet_ros.train.data.KeypointTrainDataset`.
        config: :class:`~ctrnet_ros.train.config.TrainConfig`.
        use_coord: add the coordinate loss (after ``coord_start_step``).
    """
    heatmaps = out["heatmaps"].float()
    target, map_weight = batch["heatmaps"], batch["heatmap_weight"]
    zero = heatmaps.new_zeros(())
    if model.heatmaps_are_logits:
        if config.heatmap_loss == "bce":
            l_hm = heatmap_bce_loss(heatmaps, target, map_weight, pos_weight=config.heatmap_pos_weight)
        else:
            l_hm = heatmap_mse_loss(torch.sigmoid(heatmaps), target, map_weight)
    else:
        beliefs = out.get("beliefs") or [heatmaps]
        l_hm = belief_stages_loss(beliefs, target, map_weight)
    l_mask = zero
    if getattr(model, "has_mask_head", False) and "mask_logits" in out and config.w_mask > 0:
        l_mask = mask_loss(out["mask_logits"].float(), batch["mask"], w_dice=config.w_dice)
    l_coord = zero
    if use_coord and config.w_coord > 0:
        # argmax decoding has no gradient; train its sub-pixel refinement, which inference can switch to
        method = config.decode_method if config.decode_method != "argmax" else "quadratic"
        l_coord = coordinate_loss(heatmaps, batch["keypoints"], batch["keypoint_weight"],
                                  logits=bool(model.heatmaps_are_logits), stride=int(model.heatmap_stride),
                                  decode_method=method,
                                  max_px=config.coord_max_px)
    total = config.w_heatmap * l_hm + config.w_mask * l_mask + config.w_coord * l_coord
    return {"loss": total, "heatmap": l_hm.detach(), "mask": l_mask.detach(), "coord": l_coord.detach()}
