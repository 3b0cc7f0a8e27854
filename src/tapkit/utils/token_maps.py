"""A picture of PAT's tokens: the image, each pyramid level's code map (one colour per
code, nearest-neighbour enlarged to the image's height) and the reconstruction the
pixel branch paints from them, side by side with a caption under each panel."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from tapkit.utils.overlay import _font, palette


def code_map_rgb(indices: np.ndarray, num_codes: int) -> np.ndarray:
    """(h, w) code indices -> (h, w, 3) uint8, code k in the k-th palette colour."""
    colours = np.array(palette(num_codes), np.uint8)
    return colours[np.clip(indices, 0, num_codes - 1)]


def draw_token_maps(rgb: np.ndarray, code_maps: Sequence[np.ndarray], num_codes: Sequence[int],
                    reconstruction: np.ndarray, captions: Sequence[str] | None = None, height: int = 256) -> Image.Image:
    """rgb (H, W, 3) uint8; code_maps (h_l, w_l) each; reconstruction (h, w, 3) uint8.
    -> one RGB image: [image | level 1 | ... | reconstruction], each panel `height` tall."""
    panels = [Image.fromarray(rgb)]
    panels += [Image.fromarray(code_map_rgb(m, k)) for m, k in zip(code_maps, num_codes)]
    panels.append(Image.fromarray(reconstruction))
    captions = list(captions) if captions is not None else (
        ["image"] + [f"level {i + 1} ({m.shape[0]}x{m.shape[1]})" for i, m in enumerate(code_maps)] + ["reconstruction"])
    sized = []
    for panel in panels:
        width = max(1, round(panel.width * height / panel.height))
        resample = Image.BILINEAR if panel is panels[0] else Image.NEAREST
        sized.append(panel.resize((width, height), resample))
    font = _font(height * 4)
    strip = font.getbbox("Ag")[3] + 8
    gap = 6
    out = Image.new("RGB", (sum(p.width for p in sized) + gap * (len(sized) - 1), height + strip), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    x = 0
    for panel, caption in zip(sized, captions):
        out.paste(panel, (x, 0))
        draw.text((x + 2, height + 4), caption, fill=(0, 0, 0), font=font)
        x += panel.width + gap
    return out
