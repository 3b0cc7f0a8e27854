"""How well the automatic mode finds every shape once, against annotated masks
(an SA-1B-format directory whose regions carry `concept`, e.g. the synthetic world or
scripts/plain_drawings.py's drawings).

A kept region *finds* an annotated shape when their masks overlap with IoU >= 0.8
(`match_iou`) and the region is named with the shape's shape word ("red circle" for a
red circle, "blue circle" counts: the shape, not the colour, as the issue's bar; a
model that cannot name is judged on masks only). Recall: shapes found at least once.
Precision: kept regions that find a shape. A *duplicate* is a second (third, ...) kept
region overlapping the same shape with mask IoU >= 0.5 (`overlap_iou`)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from tapkit.data.records import SkipCounter, load_rgb
from tapkit.data.sa1b import read_sa1b
from tapkit.data.synth import SHAPES
from tapkit.everything.filters import box_iou, mask_boxes

MATCH_IOU = 0.8
OVERLAP_IOU = 0.5


def mask_ious(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """Pairwise IoU of bool masks (len(a), len(b)); 0 where both are empty."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    fa = np.stack([m.ravel() for m in a]).astype(np.float32)
    fb = np.stack([m.ravel() for m in b]).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def right_name(said: str | None, truth: str) -> bool:
    """The shape word of `truth` ('red circle' -> circle) is the said name's; a truth
    without a shape word must be said as it is."""
    words = truth.split()
    if words and words[-1] in SHAPES:
        return said is not None and said.split()[-1:] == words[-1:]
    return said == truth


@dataclass
class ImageQuality:
    """One image: shapes (annotated), regions (kept), found (shapes found), correct
    (regions that find a shape), duplicates (extra regions on a shape), and the largest
    box IoU between two kept regions (what box NMS bounds)."""

    shapes: int
    regions: int
    found: int
    correct: int
    duplicates: int
    missed: list[str] = field(default_factory=list)  # concepts of the shapes not found
    max_kept_box_iou: float = 0.0


def judge_regions(truth_masks: list[np.ndarray], truth_names: list[str], masks: list[np.ndarray],
                  names: list[str | None] | None, match_iou: float = MATCH_IOU, overlap_iou: float = OVERLAP_IOU) -> ImageQuality:
    """Kept regions (masks, names or None when the model cannot name) against the
    annotated shapes of one image."""
    ious = mask_ious(truth_masks, masks)
    hits = ious >= match_iou
    if names is not None:
        named = np.array([[right_name(n, t) for n in names] for t in truth_names], dtype=bool).reshape(ious.shape)
        hits &= named
    overlaps = (ious >= overlap_iou).sum(1)
    found = hits.any(1)
    return ImageQuality(
        shapes=len(truth_masks), regions=len(masks), found=int(found.sum()), correct=int(hits.any(0).sum()),
        duplicates=int(np.maximum(overlaps - 1, 0).sum()),
        missed=[t for t, f in zip(truth_names, found) if not f],
        max_kept_box_iou=_max_pair_box_iou(masks),
    )


def _max_pair_box_iou(masks: list[np.ndarray]) -> float:
    if len(masks) < 2:
        return 0.0
    boxes = mask_boxes(torch.from_numpy(np.stack(masks)))
    ious = box_iou(boxes, boxes).fill_diagonal_(0)
    return float(ious.max())


@dataclass
class EverythingQuality:
    """Over a set of images: recall = found / shapes, precision = correct / regions,
    duplicates (extra regions on a shape), images with any duplicate, and the largest
    box IoU between two regions kept on one image."""

    images: int
    shapes: int
    regions: int
    recall: float
    precision: float
    duplicates: int
    images_with_duplicates: int
    max_kept_box_iou: float
    settings: dict
    per_image: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(results: list[tuple[str, ImageQuality]], settings: dict) -> EverythingQuality:
    shapes = sum(q.shapes for _, q in results)
    regions = sum(q.regions for _, q in results)
    return EverythingQuality(
        images=len(results), shapes=shapes, regions=regions,
        recall=sum(q.found for _, q in results) / shapes if shapes else 0.0,
        precision=sum(q.correct for _, q in results) / regions if regions else 0.0,
        duplicates=sum(q.duplicates for _, q in results),
        images_with_duplicates=sum(q.duplicates > 0 for _, q in results),
        max_kept_box_iou=max((q.max_kept_box_iou for _, q in results), default=0.0),
        settings=settings,
        per_image=[{"image": name, **asdict(q)} for name, q in results],
    )


def measure_everything(generator, sa1b_dir: str | os.PathLike, max_images: int | None = None,
                       progress: bool = True) -> EverythingQuality:
    """Runs `generator` (an EverythingGenerator) on every image of an SA-1B-format
    directory and judges its regions against the annotated ones."""
    skips = SkipCounter()
    results = []
    can_name = generator.model.can_name and generator.config.top_k > 0
    for record in tqdm(read_sa1b(sa1b_dir)[:max_images], desc="everything quality", disable=not progress, unit="img"):
        rgb = load_rgb(record.path, skips)
        if rgb is None:
            continue
        h, w = rgb.shape[:2]
        out = generator.generate(rgb)
        truth = [r for r in record.regions if r.concept]
        results.append((record.path.name, judge_regions(
            [r.mask(h, w) for r in truth], [r.concept for r in truth], [r.mask for r in out.regions],
            [r.concept for r in out.regions] if can_name else None)))
    return summarize(results, generator.config.to_dict())
