"""Tiny synthetic COCO / LVIS / VG-style datasets for the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = [
    {"id": 1, "name": "red square", "frequency": "f"},
    {"id": 2, "name": "green circle", "frequency": "c"},
    {"id": 3, "name": "blue bar", "frequency": "r"},
]
COLOURS = {1: (220, 30, 30), 2: (30, 200, 40), 3: (40, 40, 230)}
WORDS = ("a small red square", "a green circle", "the blue bar on the left", "a big red square", "two green circles")


def box_polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def make_dataset(root: Path, num_images: int = 5, seed: int = 0, lvis: bool = True) -> tuple[Path, Path]:
    """Writes `num_images` PNGs (sizes vary, non-overlapping coloured boxes on noise) and one annotation
    file that serves every benchmark: bbox, caption, category_id, polygon segmentation,
    area; with `lvis`, the LVIS fields too. Returns (annotation file, images folder)."""
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        h, w = int(rng.integers(60, 100)), int(rng.integers(70, 130))
        pixels = (rng.random((h, w, 3)) * 80).astype(np.uint8)
        image_id = 100 + i
        slot = w // 3  # one box per third of the width: boxes never overlap
        for k in range(int(rng.integers(1, 4))):
            cat = int(rng.integers(1, 4))
            bw, bh = int(rng.integers(8, slot - 2)), int(rng.integers(12, h // 2))
            x, y = k * slot + int(rng.integers(0, slot - bw)), int(rng.integers(0, h - bh))
            pixels[y : y + bh, x : x + bw] = COLOURS[cat]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [float(x), float(y), float(bw), float(bh)],
                    "area": float(bw * bh),
                    "segmentation": box_polygon(x, y, bw, bh),
                    "iscrowd": 0,
                    "caption": WORDS[int(rng.integers(len(WORDS)))],
                }
            )
        name = f"img_{i:03d}.png"
        Image.fromarray(pixels).save(images_dir / name)
        info = {"id": image_id, "file_name": name, "height": h, "width": w}
        if lvis:
            present = {a["category_id"] for a in annotations if a["image_id"] == image_id}
            info["neg_category_ids"] = [c["id"] for c in CATEGORIES if c["id"] not in present][:1]
            info["not_exhaustive_category_ids"] = []
        images.append(info)
    categories = CATEGORIES if lvis else [{"id": c["id"], "name": c["name"]} for c in CATEGORIES]
    gt = root / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return gt, images_dir
