"""Prompt sampling for promptable pre-training, after the paper's rules.

Interactive (2 stages): stage 1 gives each mask a jittered box or one point from the
mask (equal odds); stage 2 appends 1-8 points drawn from the error region between the
stage-1 prediction and the mask, labelled by whether they fall inside the mask.
Non-interactive: 1-9 points drawn uniformly from the mask. At most 9 points.

Layout follows the inference protocol: a point prompt ends with one padding point
(label 4); a box is two corners (labels 2, 3) plus any extra points, no padding.
Coordinates are pixel indices of the model-input frame (the masks' frame).
All randomness comes from the numpy Generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tapkit.inputs.labels import BACKGROUND, BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, FOREGROUND, PADDING

MAX_POINTS = 9


@dataclass
class PromptBatch:
    """xy (N, P, 2) float32, labels (N, P) int64, is_box (N,) bool."""

    xy: np.ndarray
    labels: np.ndarray
    is_box: np.ndarray

    def __len__(self) -> int:
        return self.xy.shape[0]


def sample_pixels(mask: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """num (x, y) pixel positions drawn uniformly from a non-empty (H, W) mask, (num, 2)."""
    ys, xs = np.nonzero(mask)
    assert len(ys) > 0, "cannot sample points from an empty mask"
    pick = rng.choice(len(ys), size=num, replace=num > len(ys))
    return np.stack([xs[pick], ys[pick]], 1).astype(np.float32)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight (x1, y1, x2, y2) box of a non-empty mask, in pixel indices."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def jitter_box(box: np.ndarray, rng: np.random.Generator, frame: int, max_shift: float | None = None) -> np.ndarray:
    """Enlarges a box by N(0, 0.1 * side) per edge, clipped to +-max_shift (20 px
    at 1024, scaled to the frame), and keeps it inside the frame."""
    max_shift = 20.0 * frame / 1024 if max_shift is None else max_shift
    x1, y1, x2, y2 = box
    dx = np.clip(rng.normal(0.0, 0.1 * max(x2 - x1, 1.0), 2), -max_shift, max_shift)
    dy = np.clip(rng.normal(0.0, 0.1 * max(y2 - y1, 1.0), 2), -max_shift, max_shift)
    out = np.array([x1 + min(dx[0], 0), y1 + min(dy[0], 0), x2 + max(dx[1], 0), y2 + max(dy[1], 0)], np.float32)
    return np.clip(out, 0, frame - 1)


def first_prompts(masks: np.ndarray, rng: np.random.Generator, box_prob: float = 0.5) -> PromptBatch:
    """Stage 1: per mask (N, H, W) a jittered box or one foreground point (+ padding)."""
    n = masks.shape[0]
    xy = np.zeros((n, 2, 2), np.float32)
    labels = np.zeros((n, 2), np.int64)
    is_box = rng.random(n) < box_prob
    for i in range(n):
        if is_box[i]:
            box = jitter_box(mask_box(masks[i]), rng, masks.shape[-1])
            xy[i] = box.reshape(2, 2)
            labels[i] = (BOX_TOP_LEFT, BOX_BOTTOM_RIGHT)
        else:
            xy[i, 0] = sample_pixels(masks[i], 1, rng)[0]
            labels[i] = (FOREGROUND, PADDING)
    return PromptBatch(xy, labels, is_box)


def refine_prompts(first: PromptBatch, masks: np.ndarray, predicted: np.ndarray, rng: np.random.Generator,
                   max_points: int = MAX_POINTS) -> PromptBatch:
    """Stage 2: appends the same number (1 .. max_points - 1) of error-region points to
    every prompt. A point's label is 1 inside the mask (a missed pixel), 0 outside (a
    false positive). Where prediction and mask agree everywhere, the points come from
    the mask, labelled 1. masks, predicted: (N, H, W) bool."""
    n = len(first)
    num = int(rng.integers(1, max_points))
    errors = masks ^ predicted
    extra_xy = np.zeros((n, num, 2), np.float32)
    extra_labels = np.zeros((n, num), np.int64)
    for i in range(n):
        source = errors[i] if errors[i].any() else masks[i]
        pts = sample_pixels(source, num, rng)
        extra_xy[i] = pts
        inside = masks[i][pts[:, 1].astype(int), pts[:, 0].astype(int)]
        extra_labels[i] = np.where(inside, FOREGROUND, BACKGROUND)
    # Boxes: corners + points. Points: the first point + new points + the padding point.
    xy = np.zeros((n, 2 + num, 2), np.float32)
    labels = np.zeros((n, 2 + num), np.int64)
    for i in range(n):
        if first.is_box[i]:
            xy[i, :2], labels[i, :2] = first.xy[i], first.labels[i]
            xy[i, 2:], labels[i, 2:] = extra_xy[i], extra_labels[i]
        else:
            xy[i, 0], labels[i, 0] = first.xy[i, 0], first.labels[i, 0]
            xy[i, 1 : 1 + num], labels[i, 1 : 1 + num] = extra_xy[i], extra_labels[i]
            labels[i, -1] = PADDING
    return PromptBatch(xy, labels, first.is_box.copy())


def non_interactive_prompts(masks: np.ndarray, rng: np.random.Generator, max_points: int = MAX_POINTS) -> PromptBatch:
    """1 .. max_points foreground points from each mask (the same count for all), + padding."""
    n = masks.shape[0]
    num = int(rng.integers(1, max_points + 1))
    xy = np.zeros((n, num + 1, 2), np.float32)
    labels = np.full((n, num + 1), FOREGROUND, np.int64)
    labels[:, -1] = PADDING
    for i in range(n):
        xy[i, :num] = sample_pixels(masks[i], num, rng)
    return PromptBatch(xy, labels, np.zeros(n, bool))


def point_from_mask(masks: np.ndarray, rng: np.random.Generator) -> PromptBatch:
    """One foreground point per mask + padding (caption fine-tuning's point prompts)."""
    n = masks.shape[0]
    xy = np.zeros((n, 2, 2), np.float32)
    labels = np.tile(np.array([FOREGROUND, PADDING], np.int64), (n, 1))
    for i in range(n):
        source = masks[i] if masks[i].any() else np.ones_like(masks[i])
        xy[i, 0] = sample_pixels(source, 1, rng)[0]
    return PromptBatch(xy, labels, np.zeros(n, bool))


def box_prompts(boxes: np.ndarray, rng: np.random.Generator, frame: int, jitter: bool = True) -> PromptBatch:
    """Box prompts from (N, 4) x1, y1, x2, y2 boxes (caption fine-tuning)."""
    n = boxes.shape[0]
    xy = np.stack([jitter_box(b, rng, frame) if jitter else b.astype(np.float32) for b in boxes]).reshape(n, 2, 2)
    labels = np.tile(np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.int64), (n, 1))
    return PromptBatch(xy.astype(np.float32), labels, np.ones(n, bool))
