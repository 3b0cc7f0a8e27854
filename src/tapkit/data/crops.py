"""Square crops around a region's box: how tapkit's CLIP is trained (jittered), how its
zero-shot accuracy is measured and how it teaches SemanticSA-1B (centred)."""

from __future__ import annotations

import numpy as np

EVAL_MARGIN = 1.4  # crop side / the box's longer side, the middle of training's (1.15, 1.7)


def square_crop(rgb: np.ndarray, bbox, margin: float = EVAL_MARGIN, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """rgb (H, W, 3) -> a square view around bbox (x, y, w, h): its side `margin` times the
    box's longer side (at most the image's shorter side), its centre moved by `shift`
    (fractions of the side), then slid to lie inside the image."""
    h, w = rgb.shape[:2]
    x, y, bw, bh = bbox
    side = min(max(bw, bh) * margin, h, w)
    cx, cy = x + bw / 2 + shift[0] * side, y + bh / 2 + shift[1] * side
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    side = max(int(round(side)), 1)
    return rgb[top : top + side, left : left + side]
