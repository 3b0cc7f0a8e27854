"""open_clip's eval transform, without torchvision: the shorter side resized to the model
size with PIL (bicubic unless the checkpoint says bilinear; the longer side truncated as
torchvision computes it), a centre crop (offsets rounded as torchvision rounds them),
[0, 1] scaling and the checkpoint's mean/std."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from tapkit.errors import UserError
from tapkit.models.clip.config import PreprocessConfig

RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def as_pil(image) -> Image.Image:
    """A PIL image, an (H, W, 3) uint8 array or a path -> an RGB PIL image, the way
    open_clip's users feed it (`Image.open(path)`, then PIL's `convert("RGB")`): unlike
    `tapkit.inputs.image`, no EXIF rotation, so embeddings match open_clip's."""
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as im:
                return im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise UserError(f"cannot read image {image}: {err}") from None
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise UserError(f"an image array must be (H, W, 3) uint8, got {array.shape} {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array))


def resize_shorter(image: Image.Image, size: int, resample: int) -> Image.Image:
    w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    return image.resize((new_w, new_h), resample)


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def preprocess(image, size: int, cfg: PreprocessConfig) -> torch.Tensor:
    """image (PIL, (H, W, 3) uint8 array or path) -> (3, size, size) float32, normalized."""
    pil = centre_crop(resize_shorter(as_pil(image), size, RESAMPLE[cfg.interpolation]), size)
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
    return (x - mean) / std
