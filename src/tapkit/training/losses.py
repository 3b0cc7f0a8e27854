"""Training losses: focal + dice (20:1) for masks, IoU regression, concept KL and
label-smoothed caption cross-entropy. Mask losses take logits (N, M, H, W) and
float targets (N, H, W) and return per-mask values (N, M)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from tapkit.inputs.labels import BOX_TOP_LEFT


def sigmoid_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Mean over pixels of the binary focal loss, (N, M)."""
    target = target.unsqueeze(1).expand_as(logits)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    weight = (alpha * target + (1 - alpha) * (1 - target)) * (1 - p_t).pow(gamma)
    return (ce * weight).flatten(2).mean(-1)


def dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per mask, (N, M)."""
    p = logits.sigmoid().flatten(2)
    t = target.unsqueeze(1).expand_as(logits).flatten(2)
    return 1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded masks with the target, (N, M) (no gradient)."""
    pred = (logits.detach() > 0).flatten(2).float()
    t = (target > 0.5).float().unsqueeze(1).expand_as(logits).flatten(2)
    inter = (pred * t).sum(-1)
    union = pred.sum(-1) + t.sum(-1) - inter
    return inter / union.clamp(min=1)


def select_masks(per_mask_loss: torch.Tensor, is_box: torch.Tensor) -> torch.Tensor:
    """The trained output per prompt: mask 0 for boxes, the lowest-loss of masks 1.. for points."""
    best_point = per_mask_loss[:, 1:].detach().argmin(-1) + 1
    return torch.where(is_box, torch.zeros_like(best_point), best_point)


def concept_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(logits)), mean over rows. logits, target: (N, C)."""
    log_p = logits.float().log_softmax(-1)
    return F.kl_div(log_p, target, reduction="batchmean")


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, smoothing: float = 0.1) -> torch.Tensor:
    """Next-token cross-entropy with label smoothing; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index, label_smoothing=smoothing)


def caption_words(logits: torch.Tensor, targets: torch.Tensor, special: tuple[int, ...]) -> torch.Tensor:
    """Multi-label BCE: which pieces (not `special` ones: BOS, EOS, padding) each caption
    holds. logits (B, V), targets (B, T) token ids (padding may be >= V); mean over
    captions and the vocabulary."""
    vocab = logits.shape[1]
    ignored = [i for i in special if 0 <= i < vocab]
    present = torch.zeros_like(logits, dtype=torch.float32)
    present.scatter_(1, targets.masked_fill(targets.ge(vocab), ignored[0]), 1.0)
    present[:, ignored] = 0.0
    return F.binary_cross_entropy_with_logits(logits.float(), present)


def is_box_prompt(labels: torch.Tensor) -> torch.Tensor:
    return labels[:, 0].eq(BOX_TOP_LEFT)
