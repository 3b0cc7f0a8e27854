"""Reading images as (H, W, 3) uint8 RGB arrays, and how an image maps to a model input."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tapkit.errors import UserError


class ImageError(UserError):
    """The image cannot be read or is not an image."""


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB, the way OpenCV reads files: EXIF orientation
    applied, 16-bit grey keeps its high byte (PIL's convert would saturate it)."""
    im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I;16") or im.mode == "I":
        grey = (np.asarray(im).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB")).copy()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads a file as an (H, W, 3) uint8 RGB array, honouring EXIF orientation."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image file")
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return pil_to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageError(f"cannot read image {path}: {err}") from None


def as_rgb_array(image) -> np.ndarray:
    """Accepts a path, a PIL image or an array ((H, W), (H, W, 3) or (H, W, 4) uint8)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ImageError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        raise ImageError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4); got {array.shape}")
    return np.ascontiguousarray(array[:, :, :3])


@dataclass(frozen=True)
class ResizeInfo:
    """How an image maps to the model input: original and resized (height, width),
    and the float32 scale that takes original pixel coordinates to resized ones. Each
    family's protocol fills it with its own resize rule."""

    original_size: tuple[int, int]
    resized_size: tuple[int, int]
    scale: float
