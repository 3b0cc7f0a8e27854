"""Dataset records shared by the readers: an image and its annotated regions,
plus the skip counter that makes corrupt or missing images non-fatal."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tapkit.utils.rle import decode_rle


@dataclass
class Region:
    """One annotated region. bbox is (x, y, w, h) in original pixels; segmentation is a
    COCO RLE dict, a list of polygons, or None (box-only data such as Visual Genome)."""

    id: int
    bbox: tuple[float, float, float, float]
    segmentation: dict | list | None = None
    concept: str | None = None
    caption: str | None = None

    def mask(self, height: int, width: int) -> np.ndarray:
        """(H, W) bool mask of the region."""
        from pycocotools import mask as mask_utils

        seg = self.segmentation
        if seg is None:
            raise ValueError(f"region {self.id} has no segmentation")
        if isinstance(seg, list):
            rles = mask_utils.frPyObjects(seg, height, width)
            return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        return decode_rle(seg)


@dataclass
class ImageRecord:
    image_id: int | str
    path: Path
    width: int
    height: int
    regions: list[Region] = field(default_factory=list)


@dataclass
class SkipCounter:
    """Counts records dropped because their image is missing or unreadable."""

    missing: int = 0
    corrupt: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.missing + self.corrupt

    def note(self, kind: str, path: os.PathLike | str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 5:
            self.examples.append(f"{kind}: {path}")


def load_rgb(path: Path, skips: SkipCounter | None = None) -> np.ndarray | None:
    """The image as (H, W, 3) uint8 RGB, or None (counted in `skips`) if it is missing or corrupt."""
    if not path.is_file():
        if skips is not None:
            skips.note("missing", path)
        return None
    try:
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB")).copy()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        if skips is not None:
            skips.note("corrupt", path)
        return None
