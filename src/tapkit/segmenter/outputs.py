"""What `tapkit segment` and the server write for a Segmentation: the JSON (the image,
the classes in the given order, per class its area, score and COCO RLE mask), the label
map PNG (pixel value = class index; 16-bit beyond 255 classes), the overlay, and a
PAT's token picture (each level's code map and the reconstruction beside the image)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tapkit.segmenter.segmenter import Segmentation, TokenMaps
from tapkit.utils.overlay import draw_label_map
from tapkit.utils.rle import encode_rle
from tapkit.utils.token_maps import draw_token_maps


def segmentation_json(result: Segmentation, image: str | None = None) -> dict:
    h, w = result.image_size
    classes = [{"index": i, "name": name, "area": int(result.areas[i]), "score": round(float(result.scores[i]), 4),
                "segmentation": encode_rle(result.label_map == i)} for i, name in enumerate(result.classes)]
    return {"image": {"file": image, "height": h, "width": w}, "classes": classes}


def label_map_image(result: Segmentation) -> Image.Image:
    dtype = np.uint8 if len(result.classes) <= 256 else np.uint16
    return Image.fromarray(result.label_map.astype(dtype))


def overlay_image(rgb: np.ndarray, result: Segmentation) -> Image.Image:
    return draw_label_map(rgb, result.label_map, result.classes)


def tokens_image(rgb: np.ndarray, tokens: TokenMaps) -> Image.Image:
    return draw_token_maps(rgb, tokens.code_maps, tokens.num_codes, tokens.reconstruction)
