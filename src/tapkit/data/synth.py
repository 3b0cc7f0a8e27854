"""The synthetic shapes world: scenes of coloured shapes with exact masks, concept
names and grammar captions, written in the real dataset formats (SA-1B per-image
JSON, a densecap/GRiT-style Visual Genome JSON, a COCO instances JSON).

Scene `i` of seed `s` depends only on (s, i), so any subset of a world can be
regenerated, and ranks can split the work.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tapkit.utils.atomic import write_text_atomic, write_with
from tapkit.utils.rle import encode_rle

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "ellipse")
COLOURS = {
    "red": (220, 30, 30),
    "green": (40, 170, 50),
    "blue": (35, 70, 220),
    "yellow": (245, 215, 30),
    "orange": (245, 135, 20),
    "purple": (140, 50, 180),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SIZES = {"small": (0.06, 0.09), "medium": (0.10, 0.14), "large": (0.15, 0.21)}  # radius / image side
TEXTURES = ("solid", "striped", "dotted")
RELATIONS = ("left of", "right of", "above", "below")

MIN_VISIBLE_FRACTION = 0.4
MIN_AREA = 40


def concept_names() -> list[str]:
    """The world's concept vocabulary: every '<colour> <shape>'."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


@dataclass
class SynthShape:
    shape: str
    colour: str
    size: str
    texture: str
    centre: tuple[float, float]
    mask: np.ndarray  # (H, W) bool, the visible part
    caption: str = ""

    @property
    def concept(self) -> str:
        return f"{self.colour} {self.shape}"

    def bbox(self) -> list[float]:
        ys, xs = np.nonzero(self.mask)
        return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


@dataclass
class SynthScene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    shapes: list[SynthShape] = field(default_factory=list)
    dropped: list[SynthShape] = field(default_factory=list)  # drawn but too occluded to annotate


def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float, aspect: float) -> list[tuple[float, float]]:
    """Vertices of a shape of radius r centred at (cx, cy), rotated by `angle`."""
    if shape in ("circle", "ellipse"):
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        rx, ry = (r, r) if shape == "circle" else (r, r * aspect)
        pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    elif shape == "star":
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        radius = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], 1)
    else:
        sides = {"square": 4, "triangle": 3, "hexagon": 6}[shape]
        t = np.arange(sides) * 2 * np.pi / sides - np.pi / 2 + (np.pi / 4 if sides == 4 else 0)
        scale = r * (1.25 if sides == 3 else 1.0)
        pts = np.stack([scale * np.cos(t), scale * np.sin(t)], 1)
        if sides == 3:
            pts[:, 1] += r * 0.2
    c, s = math.cos(angle), math.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    return [(float(cx + x), float(cy + y)) for x, y in rot]


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple[int, int, int] | None]:
    """A plain canvas (returned with its colour) or a cluttered one (colour None)."""
    if rng.random() < 0.35:
        colour = [(255, 255, 255), (240, 240, 235), (128, 128, 128), (30, 30, 30), (200, 220, 240)][rng.integers(5)]
        return np.full((size, size, 3), colour, np.uint8), colour
    a, b = rng.integers(60, 200, 3), rng.integers(60, 200, 3)
    ramp = np.linspace(0, 1, size)[:, None, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[None, :, None]
    base = (a * (1 - ramp) + b * ramp) * np.ones((size, size, 1))
    canvas = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(4, 16))):  # clutter: thin lines and faint blobs
        tone = tuple(int(v) for v in rng.integers(40, 220, 3))
        if rng.random() < 0.6:
            draw.line([tuple(rng.uniform(0, size, 2)), tuple(rng.uniform(0, size, 2))], fill=tone, width=int(rng.integers(1, 3)))
        else:
            x, y, r = *rng.uniform(0, size, 2), rng.uniform(2, max(size * 0.03, 2.5))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tone)
    noise = rng.normal(0, 6, (size, size, 3))
    return np.clip(np.asarray(canvas).astype(np.float32) + noise, 0, 255).astype(np.uint8), None


def _paint(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], texture: str, rng: np.random.Generator) -> None:
    rgb = np.clip(np.array(colour) + rng.integers(-12, 13, 3), 0, 255).astype(np.float32)
    h, w = mask.shape
    fill = np.broadcast_to(rgb, (h, w, 3)).copy()
    if texture != "solid":
        ys, xs = np.mgrid[0:h, 0:w]
        period = int(rng.integers(5, 9))
        if texture == "striped":
            pattern = ((xs + ys) // (period // 2 + 1)) % 2 == 0
        else:
            pattern = ((xs % period) < 2) & ((ys % period) < 2)
        shade = rgb * 0.6 if rgb.mean() > 60 else rgb + 90
        fill[pattern] = shade
    image[mask] = fill[mask].astype(np.uint8)


def _too_close(colour: str, background: tuple[int, int, int] | None) -> bool:
    if background is None:
        return False
    return float(np.abs(np.array(COLOURS[colour]) - np.array(background)).sum()) < 120


def direction(a: tuple[float, float], b: tuple[float, float]) -> str:
    """Where centre a is relative to centre b, along the larger displacement."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def relation(a: SynthShape, b: SynthShape) -> str:
    """Where a is relative to b, along the larger displacement."""
    return direction(a.centre, b.centre)


def nearest(centre: tuple[float, float], others: list[tuple[float, float]]) -> int:
    """Index of the centre in `others` nearest to `centre` (the first of equals)."""
    return min(range(len(others)), key=lambda i: (others[i][0] - centre[0]) ** 2 + (others[i][1] - centre[1]) ** 2)


def describe(shape: SynthShape, texture: bool = True) -> str:
    texture = "" if shape.texture == "solid" or not texture else f"{shape.texture} "
    return f"a {shape.size} {texture}{shape.colour} {shape.shape}"


# full: 'a small striped red circle left of a blue star'; subject: 'a small striped red
# circle'; short: 'a small red circle' (no texture, no relation).
CAPTION_KINDS = ("full", "subject", "short")


def caption_for(shape: SynthShape, others: list[SynthShape], kind: str = "full") -> str:
    """'a small red circle left of a blue star': the relation is to the nearest other
    shape. kind 'subject' leaves the relation out, 'short' the texture too (CAPTION_KINDS)."""
    if kind == "short":
        return describe(shape, texture=False)
    if not others or kind == "subject":
        return describe(shape)
    near = others[nearest(shape.centre, [o.centre for o in others])]
    return f"{describe(shape)} {relation(shape, near)} a {near.colour} {near.shape}"


def generate_scene(seed: int, index: int, size: int = 256, max_shapes: int = 5, captions: str = "full") -> SynthScene:
    rng = np.random.default_rng([seed, index])
    image, plain = _background(rng, size)
    drawn: list[SynthShape] = []
    full_areas: list[int] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        while _too_close(colour, plain):
            colour = list(COLOURS)[rng.integers(len(COLOURS))]
        size_name = list(SIZES)[rng.integers(len(SIZES))]
        r = rng.uniform(*SIZES[size_name]) * size
        cx, cy = rng.uniform(r, size - r, 2)
        poly = shape_polygon(shape, cx, cy, r, rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 0.7))
        canvas = Image.new("L", (size, size), 0)
        ImageDraw.Draw(canvas).polygon(poly, fill=1)
        mask = np.asarray(canvas).astype(bool)
        if mask.sum() < MIN_AREA:
            continue
        texture = TEXTURES[rng.integers(len(TEXTURES))] if rng.random() < 0.5 else "solid"
        _paint(image, mask, COLOURS[colour], texture, rng)
        for earlier in drawn:  # occlusion: later shapes cover earlier ones
            earlier.mask &= ~mask
        drawn.append(SynthShape(shape, colour, size_name, texture, (float(cx), float(cy)), mask))
        full_areas.append(int(mask.sum()))
    if rng.random() < 0.3:  # mild blur: edges like those of other drawing programs
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.6)))
    visible = [s for s, a in zip(drawn, full_areas) if s.mask.sum() >= max(MIN_AREA, MIN_VISIBLE_FRACTION * a)]
    for s in visible:
        s.caption = caption_for(s, [o for o in visible if o is not s], captions)
    dropped = [s for s in drawn if not any(s is v for v in visible)]
    return SynthScene(np.ascontiguousarray(image), visible, dropped)


@dataclass
class SynthWorldSummary:
    images: int
    regions: int
    out: Path


def image_name(index: int) -> str:
    return f"sa_{index:07d}"


def write_world(out: str | os.PathLike, images: int, seed: int, size: int = 256, progress: bool = True,
                captions: str = "full") -> SynthWorldSummary:
    """Writes `images` scenes to `out`: sa1b/ (JPEG + SA-1B JSON per image),
    vg_regions.json (densecap/GRiT style), coco_instances.json, concepts.txt.
    captions: 'full' (with the relation to the nearest shape) or 'subject' (without);
    the images and masks do not depend on it."""
    from tqdm import tqdm

    out = Path(out)
    sa1b = out / "sa1b"
    sa1b.mkdir(parents=True, exist_ok=True)
    names = concept_names()
    cat_ids = {n: i + 1 for i, n in enumerate(names)}
    vg_images, vg_anns, coco_anns = [], [], []
    ann_id = 0
    for index in tqdm(range(images), desc="synth", disable=not progress, unit="img"):
        scene = generate_scene(seed, index, size, captions=captions)
        stem = image_name(index)
        h, w = scene.image.shape[:2]
        anns = []
        for shape in scene.shapes:
            ann_id += 1
            rle, bbox, area = encode_rle(shape.mask), shape.bbox(), int(shape.mask.sum())
            ys, xs = np.nonzero(shape.mask)
            anns.append({
                "id": ann_id, "segmentation": rle, "bbox": bbox, "area": area,
                "predicted_iou": 1.0, "stability_score": 1.0, "crop_box": [0, 0, w, h],
                "point_coords": [[float(xs.mean()), float(ys.mean())]],
                "concept": shape.concept, "caption": shape.caption,
            })
            vg_anns.append({"id": ann_id, "image_id": index, "bbox": bbox, "area": area, "category_id": 1,
                            "iscrowd": 0, "caption": shape.caption})
            coco_anns.append({"id": ann_id, "image_id": index, "bbox": bbox, "area": area, "iscrowd": 0,
                              "category_id": cat_ids[shape.concept], "segmentation": rle})
        record = {"image": {"image_id": index, "width": w, "height": h, "file_name": f"{stem}.jpg"}, "annotations": anns}
        write_with(sa1b / f"{stem}.jpg", lambda tmp: Image.fromarray(scene.image).save(tmp, format="JPEG", quality=95))
        write_text_atomic(sa1b / f"{stem}.json", json.dumps(record))
        vg_images.append({"id": index, "file_name": f"{stem}.jpg", "width": w, "height": h})
    vg = {"images": vg_images, "annotations": vg_anns, "categories": [{"id": 1, "name": "object"}]}
    coco = {"images": vg_images, "annotations": coco_anns,
            "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]}
    write_text_atomic(out / "vg_regions.json", json.dumps(vg))
    write_text_atomic(out / "coco_instances.json", json.dumps(coco))
    write_text_atomic(out / "concepts.txt", "\n".join(names) + "\n")
    return SynthWorldSummary(images, ann_id, out)
