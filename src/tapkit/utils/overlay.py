"""Mask overlays: masks drawn over the image with a label per region."""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def palette(n: int) -> list[tuple[int, int, int]]:
    """n well-separated saturated colours (golden-ratio hue steps)."""
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((0.07 + i * 0.618034) % 1.0, 0.75, 0.95))
        for i in range(n)
    ]


def region_label(concept: str | None, score: float | None, caption: str | None) -> str:
    """'concept (score): caption', leaving out what the model did not give."""
    head = concept or "region"
    if score is not None:
        head += f" ({score:.2f})"
    return f"{head}: {caption}" if caption else head


def _font(height: int) -> ImageFont.ImageFont:
    size = max(10, min(28, height // 40))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a single bitmap size
        return ImageFont.load_default()


def draw_overlay(
    rgb: np.ndarray,
    masks: Sequence[np.ndarray],
    labels: Sequence[str],
    points: Sequence[np.ndarray] = (),
    alpha: float = 0.45,
) -> Image.Image:
    """Blends each mask in its own colour, outlines it, marks its prompt points
    (green foreground, red background, squares for box corners) and writes its label."""
    out = rgb.astype(np.float32).copy()
    colours = palette(len(masks))
    for mask, colour in zip(masks, colours):
        out[mask] = out[mask] * (1 - alpha) + np.array(colour, np.float32) * alpha
        edge = mask & ~_erode(mask)
        out[edge] = colour
    image = Image.fromarray(out.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = _font(rgb.shape[0])
    r = max(3, rgb.shape[0] // 150)
    for pts in points:
        for x, y, label in np.asarray(pts).reshape(-1, 3):
            label = int(label)
            if label == 4:
                continue
            fill = {0: (230, 40, 40), 1: (40, 210, 60)}.get(label, (250, 250, 250))
            shape = draw.ellipse if label in (0, 1) else draw.rectangle
            shape((x - r, y - r, x + r, y + r), fill=fill, outline=(0, 0, 0))
    for mask, colour, text in zip(masks, colours, labels):
        ys, xs = np.nonzero(mask)
        x, y = (int(xs.min()), int(ys.min())) if xs.size else (0, 0)
        text = _fit(draw, text, font, rgb.shape[1] - 8)
        x = max(0, min(x, rgb.shape[1] - 6 - int(draw.textlength(text, font=font))))
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        y = max(0, y - (bottom - top) - 4)
        left, top, right, bottom = draw.textbbox((x + 2, y + 2), text, font=font)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=colour)
        draw.text((x + 2, y + 2), text, fill=(0, 0, 0), font=font)
    return image


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shortens text with an ellipsis until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _erode(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner
