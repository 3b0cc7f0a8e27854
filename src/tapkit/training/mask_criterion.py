"""The Mask2Former set criterion SAN trains with: Hungarian matching of queries to the
target masks (scipy's `linear_sum_assignment` on 2 x class + 5 x BCE + 5 x Dice costs
over uniformly random points), then cross-entropy on every query's class (no-object
weight 0.1) and BCE + Dice on importance-sampled points of the matched masks, for the
prediction and every deep-supervision output. Reusable by SAN-like models: it reads
only (mask logits, class logits) pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F


@dataclass(frozen=True)
class CriterionConfig:
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 112 * 112
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75


@dataclass
class SemanticTarget:
    """One image's targets: labels (K,) long class indices, masks (K, H, W) float {0, 1}
    at the input resolution (one mask per class present; ignored pixels in none)."""

    labels: torch.Tensor
    masks: torch.Tensor


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """maps (N, H, W), coords (N, P, 2) in [0, 1] as (x, y) -> (N, P), bilinear."""
    grid = (2 * coords - 1).unsqueeze(2).to(maps.dtype)
    return F.grid_sample(maps.unsqueeze(1), grid, align_corners=False)[:, 0, :, 0]


def uncertain_points(logits: torch.Tensor, num_points: int, oversample: float, importance: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask2Former's importance sampling: of `oversample * num_points` random points keep
    the `importance` share most uncertain (|logit| smallest), fill the rest uniformly.
    logits (N, H, W) -> coords (N, num_points, 2)."""
    n = logits.shape[0]
    sampled = int(num_points * oversample)
    coords = torch.rand(n, sampled, 2, device=logits.device, generator=generator)
    uncertainty = -point_sample(logits, coords).abs()
    k = int(importance * num_points)
    idx = uncertainty.topk(k, dim=1).indices
    chosen = torch.gather(coords, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    rest = torch.rand(n, num_points - k, 2, device=logits.device, generator=generator)
    return torch.cat([chosen, rest], 1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, P) logits and targets -> (N,) 1 - soft Dice (smoothing 1)."""
    p = logits.sigmoid()
    return 1 - (2 * (p * targets).sum(-1) + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def pairwise_costs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, P) predictions, (K, P) targets -> BCE and Dice cost matrices (Q, K)."""
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    bce = (pos @ targets.t() + neg @ (1 - targets).t()) / logits.shape[1]
    p = logits.sigmoid()
    dice = 1 - (2 * p @ targets.t() + 1) / (p.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)
    return bce, dice


@torch.no_grad()
def hungarian_match(mask_logits: torch.Tensor, class_logits: torch.Tensor, target: SemanticTarget,
                    cfg: CriterionConfig, generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image: mask_logits (Q, h, w), class_logits (Q, C + 1) -> (query indices,
    target indices) of the minimum-cost assignment."""
    if len(target.labels) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    coords = torch.rand(1, cfg.num_points, 2, device=mask_logits.device, generator=generator)
    pred = point_sample(mask_logits.float(), coords.expand(mask_logits.shape[0], -1, -1))
    tgt = point_sample(target.masks.float(), coords.expand(target.masks.shape[0], -1, -1))
    bce, dice = pairwise_costs(pred, tgt)
    cost_class = -class_logits.float().softmax(-1)[:, target.labels]
    cost = cfg.mask_weight * bce + cfg.class_weight * cost_class + cfg.dice_weight * dice
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return rows.astype(np.int64), cols.astype(np.int64)


def set_losses(mask_logits: torch.Tensor, class_logits: torch.Tensor, targets: list[SemanticTarget],
               cfg: CriterionConfig, num_masks: float, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One output (B, Q, h, w), (B, Q, C + 1) -> unweighted {'ce', 'mask', 'dice'}."""
    b, q, num_classes = class_logits.shape[0], class_logits.shape[1], class_logits.shape[2] - 1
    target_classes = torch.full((b, q), num_classes, dtype=torch.long, device=class_logits.device)
    preds, gts = [], []
    for i, target in enumerate(targets):
        rows, cols = hungarian_match(mask_logits[i], class_logits[i], target, cfg, generator)
        rows_t, cols_t = torch.from_numpy(rows).to(class_logits.device), torch.from_numpy(cols).to(class_logits.device)
        target_classes[i, rows_t] = target.labels[cols_t]
        preds.append(mask_logits[i, rows_t])
        gts.append(target.masks[cols_t])
    weight = torch.ones(num_classes + 1, device=class_logits.device)
    weight[-1] = cfg.no_object_weight
    ce = F.cross_entropy(class_logits.float().transpose(1, 2), target_classes, weight)
    pred, gt = torch.cat(preds), torch.cat(gts)
    if len(pred) == 0:
        zero = mask_logits.sum() * 0
        return {"ce": ce, "mask": zero, "dice": zero}
    # Targets at the input resolution, predictions on the side grid: points are normalized for both.
    coords = uncertain_points(pred.detach().float(), cfg.num_points, cfg.oversample_ratio, cfg.importance_sample_ratio,
                              generator)
    pred_points = point_sample(pred.float(), coords)
    gt_points = point_sample(gt.float(), coords)
    bce = F.binary_cross_entropy_with_logits(pred_points, gt_points, reduction="none").mean(1).sum() / num_masks
    return {"ce": ce, "mask": bce, "dice": dice_loss(pred_points, gt_points).sum() / num_masks}


def mask_classification_loss(outputs: list[tuple[torch.Tensor, torch.Tensor]], targets: list[SemanticTarget],
                             cfg: CriterionConfig = CriterionConfig(),
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """outputs: (mask logits, class logits) of the prediction and every auxiliary output.
    -> (weighted total, parts): each output matched on its own, num_masks averaged
    over ranks under torch.distributed (as Mask2Former)."""
    device = outputs[0][0].device
    num_masks = torch.tensor(float(sum(len(t.labels) for t in targets)), device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(num_masks)
        num_masks = num_masks / torch.distributed.get_world_size()
    num_masks = float(num_masks.clamp(min=1))
    weights = {"ce": cfg.class_weight, "mask": cfg.mask_weight, "dice": cfg.dice_weight}
    total = outputs[0][0].new_zeros(()).float()
    parts: dict[str, float] = {}
    for k, (masks, classes) in enumerate(outputs):
        losses = set_losses(masks, classes, targets, cfg, num_masks, generator)
        suffix = "" if k == 0 else f"_aux{k}"
        for name, value in losses.items():
            total = total + weights[name] * value
            parts[f"loss_{name}{suffix}"] = float(value.detach())
    return total, parts
