"""Evaluation prompts as the model sees them, decoded in batches.

A box is its two corners with labels 2 and 3 (so the predictor routes it to
mask 0); clicks are followed by one padding point (so they take the best of
masks 1-3). Coordinates are original-image pixels; boxes are not clipped to
the image, as in the reference."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from tapkit.inputs.labels import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, FOREGROUND, PADDING
from tapkit.predictor.predictor import DecodedPrompts, Predictor


def box_prompts(boxes_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) float32 [x1, y1, x2, y2] -> (N, 2, 3) float32 [x, y, label]."""
    labels = np.broadcast_to(np.array([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], np.float32)[None, :, None], (len(boxes_xyxy), 2, 1))
    return np.concatenate([boxes_xyxy.reshape(-1, 2, 2).astype(np.float32), labels], axis=-1)


def click_prompts(points_xy: np.ndarray) -> np.ndarray:
    """(N, K, 2) foreground clicks -> (N, K + 1, 3) float32 with the padding point."""
    n, k = points_xy.shape[:2]
    out = np.zeros((n, k + 1, 3), np.float32)
    out[:, :k, :2] = points_xy
    out[:, :k, 2] = FOREGROUND
    out[:, k, 2] = PADDING
    return out


def decode_in_batches(predictor: Predictor, prompts: np.ndarray, max_batch: int) -> Iterator[tuple[slice, DecodedPrompts]]:
    """Decodes (N, P, 3) prompts of equal length against the predictor's image,
    `max_batch` at a time; yields (rows, decoded)."""
    for start in range(0, len(prompts), max_batch):
        rows = slice(start, min(start + max_batch, len(prompts)))
        yield rows, predictor.decode_points(prompts[rows])
