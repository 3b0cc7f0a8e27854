"""Where the automatic mode prompts: point grids and multi-scale crop boxes.

Follows SAM's automatic mask generator: an n x n grid of cell centres in [0, 1]^2,
and crop layers where layer i cuts the image into 2^i x 2^i overlapping tiles whose
grids have n / downscale^i points per side."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CropBox:
    """A tile of the image, [x0, x1) x [y0, y1) in original pixels, and its layer
    (0 is the whole image)."""

    x0: int
    y0: int
    x1: int
    y1: int
    layer: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def xyxy(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)

    def xywh(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.width, self.height)


def point_grid(points_per_side: int) -> np.ndarray:
    """Cell centres of a points_per_side^2 grid over [0, 1]^2, row-major (y outer),
    (points_per_side^2, 2) float32 [x, y]."""
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    side = (np.arange(points_per_side, dtype=np.float64) + 0.5) / points_per_side
    xs, ys = np.meshgrid(side, side, indexing="xy")
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1).astype(np.float32)


def layer_points_per_side(points_per_side: int, layer: int, downscale: int) -> int:
    """Grid size of a crop layer: the base size divided by downscale^layer (at least 1)."""
    return max(1, int(points_per_side / downscale**layer))


def crop_boxes(height: int, width: int, n_layers: int, overlap_ratio: float) -> list[CropBox]:
    """The whole image, then for layer i = 1..n_layers a 2^i x 2^i tiling whose
    neighbouring tiles overlap by overlap_ratio * short side * 2 / 2^i pixels
    (tiles that would be empty on a tiny image are left out)."""
    boxes = [CropBox(0, 0, width, height, 0)]
    short = min(height, width)
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short * 2 / per_side)
        tile_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        tile_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        for i in range(per_side):
            y0 = (tile_h - overlap) * i
            for j in range(per_side):
                x0 = (tile_w - overlap) * j
                box = CropBox(x0, y0, min(x0 + tile_w, width), min(y0 + tile_h, height), layer)
                if box.width > 0 and box.height > 0:  # tiny images give empty tiles
                    boxes.append(box)
    return boxes


def crop_points(crop: CropBox, points_per_side: int) -> np.ndarray:
    """The grid of a crop in crop pixels, (n^2, 2) float32."""
    return point_grid(points_per_side) * np.array([crop.width, crop.height], np.float32)
