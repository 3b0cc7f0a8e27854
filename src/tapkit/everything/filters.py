"""Pure functions that decide which candidate masks survive: stability score,
boxes of masks, box IoU and greedy non-maximum suppression (of boxes, and of masks),
the crop-edge rule, border connectivity (how much of a mask lies along the image
border), and removal of small islands and holes.

Boxes are float [x0, y0, x1, y1] with exclusive right/bottom edges, so a mask
covering pixel columns 3..5 has x0 = 3, x1 = 6 and its box area is a pixel count."""

from __future__ import annotations

import numpy as np
import torch

from tapkit.errors import UserError


def stability_score(logits: torch.Tensor, offset: float, threshold: float = 0.0) -> torch.Tensor:
    """IoU between the masks thresholded at threshold + offset and threshold - offset
    (the first is inside the second, so it is a ratio of pixel counts).
    logits: (N, H, W) -> (N,) float32; 0 where even the loose mask is empty."""
    inner = logits.gt(threshold + offset).flatten(1).sum(1, dtype=torch.int32)
    outer = logits.gt(threshold - offset).flatten(1).sum(1, dtype=torch.int32)
    return torch.where(outer > 0, inner.float() / outer.clamp(min=1).float(), torch.zeros_like(inner, dtype=torch.float32))


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of bool masks (N, H, W) -> (N, 4) float32 [x0, y0, x1, y1] in pixel
    units (exclusive right/bottom); all zeros for an empty mask."""
    n, h, w = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    empty = ~rows.any(dim=1)
    y0 = rows.float().argmax(dim=1)
    y1 = h - rows.flip(1).float().argmax(dim=1)
    x0 = cols.float().argmax(dim=1)
    x1 = w - cols.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes.masked_fill(empty.unsqueeze(1), 0.0)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boxes (N, 4) and (M, 4) -> (N, M); 0 where the union is empty."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: visit boxes by descending score (ties keep
    the input order) and drop every later box whose IoU with a kept one exceeds
    iou_threshold. Returns the kept indices, best first, (K,) int64."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(scores.float().cpu(), descending=True, stable=True).indices
    overlaps = box_iou(boxes[order].float().cpu(), boxes[order].float().cpu()).gt(iou_threshold).numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(kept, dtype=torch.long)]


def mask_nms(masks: list[np.ndarray], scores: list[float], iou_threshold: float, max_side: int = 512) -> list[int]:
    """Greedy non-maximum suppression on mask IoU: visit masks (H, W) bool by descending
    score (ties keep the input order) and drop every later mask whose mask IoU with a
    kept one exceeds iou_threshold. Box NMS misses two masks of one shape when one of
    them has a far-away island (its box grows, the masks still overlap). IoUs are taken
    on the masks subsampled to at most `max_side` pixels a side. Returns kept indices, best first."""
    if not masks:
        return []
    h, w = masks[0].shape
    step = max(1, -(-max(h, w) // max_side))
    flat = torch.from_numpy(np.stack([m[::step, ::step].ravel() for m in masks])).float()
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    overlaps = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter)).gt(iou_threshold).numpy()
    order = torch.sort(torch.tensor(scores, dtype=torch.float32), descending=True, stable=True).indices.tolist()
    kept, suppressed = [], np.zeros(len(masks), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlaps[i]
    return kept


def near_crop_edge(boxes: torch.Tensor, crop_xyxy: tuple[int, int, int, int], image_xyxy: tuple[int, int, int, int], atol: float = 20.0) -> torch.Tensor:
    """Boxes (N, 4) in image pixels that touch a side of the crop (within atol) that is
    not also a side of the image: such masks are probably cut off by the crop. (N,) bool."""
    crop = torch.tensor(crop_xyxy, dtype=torch.float32, device=boxes.device)
    image = torch.tensor(image_xyxy, dtype=torch.float32, device=boxes.device)
    at_crop = (boxes.float() - crop).abs().le(atol)
    at_image = (boxes.float() - image).abs().le(atol)
    return (at_crop & ~at_image).any(dim=1)


def border_connectivity(masks: torch.Tensor, sides: tuple[bool, bool, bool, bool] = (True, True, True, True)) -> torch.Tensor:
    """Pixels of each mask on the chosen outer rows / columns (top, bottom, left, right;
    a corner pixel counts once) divided by the square root of the mask's area: the
    boundary connectivity of Zhu et al., "Saliency optimization from robust background
    detection" (CVPR 2014). A region touching the border with a tip scores near 0, a
    shape cut in half by the border about 1.6, a strip of background along the border
    several. masks: (N, H, W) bool -> (N,) float32; 0 for an empty mask."""
    n, h, w = masks.shape
    ring = torch.zeros((h, w), dtype=torch.bool, device=masks.device)
    top, bottom, left, right = sides
    if top:
        ring[0] = True
    if bottom:
        ring[-1] = True
    if left:
        ring[:, 0] = True
    if right:
        ring[:, -1] = True
    on_border = (masks & ring).flatten(1).sum(1).float()
    area = masks.flatten(1).sum(1).float()
    return torch.where(area > 0, on_border / area.clamp(min=1).sqrt(), torch.zeros_like(area))


def _components(mask: np.ndarray):
    try:
        from scipy import ndimage
    except ImportError:
        raise UserError("removing small regions needs scipy: pip install 'tapkit-vision[everything]'") from None
    return ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))


def remove_small_regions(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    """Fills holes and removes islands smaller than min_area pixels (8-connected), as
    SAM's post-processing does, except that only enclosed background counts as a hole
    (a gap open to the image border is not filled). If every island is small the
    largest one stays. Returns (cleaned (H, W) bool mask, whether anything changed)."""
    changed = False
    holes, count = _components(~mask)
    if count:
        sizes = np.bincount(holes.ravel(), minlength=count + 1)
        border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        small = np.setdiff1d(np.flatnonzero(sizes < min_area), np.append(border, 0))
        if small.size:
            mask = mask | np.isin(holes, small)
            changed = True
    islands, count = _components(mask)
    if count:
        sizes = np.bincount(islands.ravel(), minlength=count + 1)[1:]
        big = np.flatnonzero(sizes >= min_area) + 1
        if big.size == 0:
            big = np.array([int(sizes.argmax()) + 1])
        if big.size < count:
            mask = np.isin(islands, big)
            changed = True
    return mask, changed
