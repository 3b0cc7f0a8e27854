"""Large-scale jitter (Ghiasi et al.), as SCA trains with it: the image is scaled so
its longest side is the model size times a random factor in [min, max], then a
random window of the model size is cut out (when the image outgrows it); boxes follow
and are clipped; an optional horizontal flip. The result is at model scale: the model
pads it, it is not resized again."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MIN_BOX_SIDE = 2.0


@dataclass
class Jittered:
    """image (h, w, 3) uint8 with h, w <= size; boxes (K, 4) x1, y1, x2, y2 in its
    pixels; keep (K,) the boxes still visible (at least MIN_BOX_SIDE on both sides)."""

    image: np.ndarray
    boxes: np.ndarray
    keep: np.ndarray


def large_scale_jitter(
    rgb: np.ndarray,
    boxes: np.ndarray,
    size: int,
    scale_range: tuple[float, float] | None,
    rng: np.random.Generator,
    hflip_prob: float = 0.0,
) -> Jittered:
    """rgb (H, W, 3) uint8; boxes (K, 4) x1, y1, x2, y2 in original pixels. Without a
    scale range the image is only fitted to the model size (longest side = size)."""
    h, w = rgb.shape[:2]
    factor = 1.0 if scale_range is None else float(rng.uniform(*scale_range))
    scale = size / max(h, w) * factor
    new_h, new_w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    image = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR))
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(scale)
    y0 = int(rng.integers(0, new_h - size + 1)) if new_h > size else 0
    x0 = int(rng.integers(0, new_w - size + 1)) if new_w > size else 0
    image = image[y0 : y0 + size, x0 : x0 + size]
    crop_h, crop_w = image.shape[:2]
    boxes = boxes - np.array([x0, y0, x0, y0], np.float32)
    boxes = np.clip(boxes, 0, [crop_w - 1, crop_h - 1, crop_w - 1, crop_h - 1]).astype(np.float32)
    if rng.random() < hflip_prob:
        image = image[:, ::-1]
        boxes = np.stack([crop_w - 1 - boxes[:, 2], boxes[:, 1], crop_w - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
    keep = (boxes[:, 2] - boxes[:, 0] >= MIN_BOX_SIDE) & (boxes[:, 3] - boxes[:, 1] >= MIN_BOX_SIDE)
    return Jittered(np.ascontiguousarray(image), boxes, keep)
