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
    for (x0, y0, x1, y1), text, colour in zip(layout_labels(draw, font, masks, labels, rgb.shape[1], rgb.shape[0]), labels, colours):
        text = _fit(draw, text, font, rgb.shape[1] - 8)
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
        draw.text((x0 + PAD - left, y0 + PAD - top), text, fill=(0, 0, 0), font=font)
    return image


PAD = 2  # pixels between a label's text and the edge of its box


def layout_labels(draw: ImageDraw.ImageDraw, font, masks: Sequence[np.ndarray], labels: Sequence[str],
                  width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Where each label's box goes, (x0, y0, x1, y1) exclusive, inside the image: just above
    its mask's top-left corner when that spot is free, else the free spot nearest to it, so
    labels of neighbouring regions never cover each other (unless the image has no room)."""
    sizes = []
    for text in labels:
        left, top, right, bottom = draw.textbbox((0, 0), _fit(draw, text, font, width - 8), font=font)
        sizes.append((min(width, right - left + 2 * PAD), min(height, bottom - top + 2 * PAD)))
    anchors = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        anchors.append((int(xs.min()), int(ys.min())) if xs.size else (0, 0))
    return place_boxes(anchors, sizes, width, height)


def place_boxes(anchors: Sequence[tuple[int, int]], sizes: Sequence[tuple[int, int]], width: int,
                height: int) -> list[tuple[int, int, int, int]]:
    """Greedy placement, in order: box i (w, h) prefers to sit with its bottom-left corner
    on anchor i (a mask's top-left); if that overlaps a box already placed, it takes the
    free position nearest to that spot on a grid of half-box steps, clamped inside the image."""
    placed = np.zeros((0, 4), np.int64)
    out = []
    for (ax, ay), (w, h) in zip(anchors, sizes):
        px, py = ax, ay - h - PAD
        xs = np.unique(np.clip(np.concatenate([[px], np.arange(0, width - w + 1, max(1, w // 4))]), 0, max(0, width - w)))
        ys = np.unique(np.clip(np.concatenate([[py, ay], np.arange(0, height - h + 1, max(1, h // 2))]), 0, max(0, height - h)))
        cx, cy = np.meshgrid(xs, ys)
        cx, cy = cx.ravel(), cy.ravel()
        order = np.argsort((cx - px) ** 2 + (cy - py) ** 2, kind="stable")
        cand = np.stack([cx, cy, cx + w, cy + h], axis=1)[order]
        if len(placed):
            hits = ((cand[:, None, 0] < placed[None, :, 2]) & (placed[None, :, 0] < cand[:, None, 2])
                    & (cand[:, None, 1] < placed[None, :, 3]) & (placed[None, :, 1] < cand[:, None, 3])).any(axis=1)
            free = np.flatnonzero(~hits)
            box = cand[free[0]] if free.size else cand[0]
        else:
            box = cand[0]
        placed = np.vstack([placed, box[None]])
        out.append(tuple(int(v) for v in box))
    return out


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


def draw_label_map(rgb: np.ndarray, label_map: np.ndarray, classes: Sequence[str], alpha: float = 0.55) -> Image.Image:
    """A semantic label map over the image (one colour per class, in class order) with a
    legend of the classes present, largest first, on a strip to the right."""
    colours = np.array(palette(len(classes)), np.uint8)
    blended = (rgb.astype(np.float32) * (1 - alpha) + colours[label_map].astype(np.float32) * alpha).astype(np.uint8)
    h, w = label_map.shape
    font = _font(max(h, 320))
    areas = np.bincount(label_map.ravel(), minlength=len(classes))
    present = [int(i) for i in np.argsort(-areas, kind="stable") if areas[i] > 0]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = max(probe.textbbox((0, 0), "Ag", font=font)[3] + 6, 14)
    text_w = max([probe.textlength(classes[i], font=font) for i in present] + [40])
    strip = int(text_w + line + 16)
    canvas = Image.new("RGB", (w + strip, max(h, line * len(present) + 8)), (255, 255, 255))
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, i in enumerate(present):
        y = 4 + row * line
        draw.rectangle([w + 6, y + 2, w + 6 + line - 6, y + line - 4], fill=tuple(int(c) for c in colours[i]), outline=(0, 0, 0))
        draw.text((w + 8 + line, y), classes[i], fill=(0, 0, 0), font=font)
    return canvas
