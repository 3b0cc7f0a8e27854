"""Plain drawings made the way other programs draw: PIL's own antialiased primitives
(ellipse, rectangle, regular polygon) at 4x, downsampled, on a plain background.
Not the synthetic world's renderer. Writes an SA-1B-format directory with concept and
caption annotations, so `tapkit data evaluate --sa1b DIR` measures the default model
on them; with --example, also writes the README's example image; with --semseg, the same
drawings as a synthetic semantic-segmentation split (images/, labels/, classes.txt,
unseen.txt: what `tapkit eval semseg --dataset synthetic` reads). Captions follow the
synthetic world's grammar without size words: 'a red circle left of a blue star', the
relation being to the nearest other shape by centre.

    python scripts/plain_drawings.py --out scratch/plain --images 40
    python scripts/plain_drawings.py --out scratch/plain_sep --images 20 --separated   # 3-4 shapes apart
    python scripts/plain_drawings.py --semseg scratch/plain_semseg --images 60 --seed 0
    python scripts/plain_drawings.py --example examples/shapes.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tapkit.data.synth import COLOURS, direction, nearest
from tapkit.data.synth_semseg import IGNORE, UNSEEN, semseg_classes
from tapkit.utils.rle import encode_rle

SUPER = 4
BACKGROUNDS = [(255, 255, 255), (245, 245, 245), (255, 250, 235)]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    s = SUPER
    cx, cy, r = cx * s, cy * s, r * s
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ellipse":
        draw.ellipse([cx - r, cy - 0.55 * r, cx + r, cy + 0.55 * r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r], fill=fill)
    elif shape == "triangle":
        draw.regular_polygon((cx, cy, r), 3, fill=fill)
    elif shape == "hexagon":
        draw.regular_polygon((cx, cy, r), 6, fill=fill)
    elif shape == "star":
        pts = [(cx + (r if i % 2 == 0 else 0.45 * r) * math.cos(i * math.pi / 5 - math.pi / 2),
                cy + (r if i % 2 == 0 else 0.45 * r) * math.sin(i * math.pi / 5 - math.pi / 2)) for i in range(10)]
        draw.polygon(pts, fill=fill)


def render(items, size: tuple[int, int], background) -> tuple[np.ndarray, list[np.ndarray]]:
    """items: [(shape, colour, cx, cy, r)], drawn in order. Returns the RGB image and
    each item's visible mask (later items occlude earlier ones)."""
    w, h = size
    canvas = Image.new("RGB", (w * SUPER, h * SUPER), background)
    draw = ImageDraw.Draw(canvas)
    masks = []
    for shape, colour, cx, cy, r in items:
        layer = Image.new("L", canvas.size, 0)
        draw_shape(ImageDraw.Draw(layer), shape, cx, cy, r, 255)
        mask = np.asarray(layer.resize((w, h), Image.BOX)) >= 128
        masks = [m & ~mask for m in masks] + [mask]
        draw_shape(draw, shape, cx, cy, r, COLOURS[colour])
    return np.asarray(canvas.resize((w, h), Image.LANCZOS)), masks


def caption(items, k: int) -> str:
    """'a red circle left of a blue star': item k and where it is from the nearest other item."""
    shape, colour, cx, cy, _ = items[k]
    others = [it for i, it in enumerate(items) if i != k]
    if not others:
        return f"a {colour} {shape}"
    near = others[nearest((cx, cy), [(o[2], o[3]) for o in others])]
    return f"a {colour} {shape} {direction((cx, cy), (near[2], near[3]))} a {near[1]} {near[0]}"


def write_record(out: Path, stem: str, image: np.ndarray, items, masks) -> None:
    h, w = image.shape[:2]
    anns = []
    for k, ((shape, colour, *_), mask) in enumerate(zip(items, masks)):
        ys, xs = np.nonzero(mask)
        anns.append({"id": k + 1, "segmentation": encode_rle(mask), "area": int(mask.sum()),
                     "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
                     "concept": f"{colour} {shape}", "caption": caption(items, k)})
    Image.fromarray(image).save(out / f"{stem}.png")
    (out / f"{stem}.json").write_text(json.dumps({"image": {"image_id": stem, "width": w, "height": h,
                                                           "file_name": f"{stem}.png"}, "annotations": anns}))


def write_semseg(out: Path, stem: str, image: np.ndarray, items, masks) -> None:
    """The label map of one drawing: class indices of semseg_classes(), background 0,
    shapes too small to annotate 255."""
    classes = semseg_classes()
    labels = np.zeros(image.shape[:2], np.uint8)
    for (shape, colour, *_), mask in zip(items, masks):
        labels[mask] = classes.index(f"{colour} {shape}") if mask.sum() >= 100 else IGNORE
    Image.fromarray(image).save(out / "images" / f"{stem}.png")
    Image.fromarray(labels).save(out / "labels" / f"{stem}.png")


def example_items():
    return [("circle", "red", 120, 80, 40), ("star", "blue", 240, 150, 45), ("square", "green", 80, 185, 32),
            ("triangle", "yellow", 250, 55, 30)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="SA-1B-format output directory")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--example", help="write the README example image here")
    parser.add_argument("--semseg", help="also write the drawings as a semantic-segmentation split here")
    parser.add_argument("--separated", action="store_true",
                        help="3-4 shapes per image that neither touch nor overlap (default: 1-3, may overlap)")
    args = parser.parse_args()
    if args.example:
        image, _ = render(example_items(), (320, 240), (255, 255, 255))
        Path(args.example).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(args.example)
    if args.semseg:
        semseg = Path(args.semseg)
        for sub in ("images", "labels"):
            (semseg / sub).mkdir(parents=True, exist_ok=True)
        (semseg / "classes.txt").write_text("\n".join(semseg_classes()) + "\n")
        (semseg / "unseen.txt").write_text("\n".join(UNSEEN) + "\n")
    if args.out or args.semseg:
        out = Path(args.out) if args.out else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(args.seed)
        shapes = ("circle", "square", "triangle", "star", "hexagon", "ellipse")
        colours = [c for c in COLOURS if c != "white"]
        for i in range(args.images):
            w, h = int(rng.integers(200, 400)), int(rng.integers(200, 400))
            items = []
            wanted = int(rng.integers(3, 5)) if args.separated else int(rng.integers(1, 4))
            for _ in range(wanted if not args.separated else 200):
                if len(items) == wanted:
                    break
                r = float(rng.uniform(0.08, 0.18) * min(w, h))
                item = (shapes[rng.integers(6)], colours[rng.integers(len(colours))],
                        float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r)), r)
                if args.separated and any(math.dist(item[2:4], o[2:4]) < item[4] + o[4] + 6 for o in items):
                    continue
                items.append(item)
            image, masks = render(items, (w, h), BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
            keep = [(it, m) for it, m in zip(items, masks) if m.sum() >= 100]
            if keep and out is not None:
                write_record(out, f"plain_{i:04d}", image, [k[0] for k in keep], [k[1] for k in keep])
            if keep and args.semseg:
                write_semseg(Path(args.semseg), f"plain_{i:04d}", image, items, masks)


if __name__ == "__main__":
    main()
