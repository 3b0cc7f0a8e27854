"""COCO run-length encoding of binary masks ({"size": [h, w], "counts": str})."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO compressed RLE with a str `counts`."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts, or uncompressed list counts) -> (H, W) bool."""
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    elif isinstance(counts, str):
        rle = {"size": rle["size"], "counts": counts.encode("ascii")}
    return mask_utils.decode(rle).astype(bool)
