"""Semantic label maps of the synthetic world, with its open-vocabulary split.

Layout (what `tapkit eval semseg --dataset synthetic` and stage `san` read):
`OUT/images/<stem>.jpg`, `OUT/labels/<stem>.png` (uint8: the index of the pixel's class
in `classes.txt`, 255 ignored), `OUT/classes.txt` (`background` + the 48 colour-shape
names) and `OUT/unseen.txt` (the 8 names segmentation training never sees). In a
training split (`hide_unseen`) the unseen shapes' pixels are 255 as well. Shapes drawn
but too occluded to be annotated are 255 in every split."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tapkit.data.synth import concept_names, generate_scene, image_name
from tapkit.utils.atomic import write_text_atomic, write_with

IGNORE = 255
BACKGROUND = "background"
UNSEEN = ("red star", "green hexagon", "blue ellipse", "yellow square", "orange circle", "purple triangle",
          "white hexagon", "black star")


def semseg_classes() -> list[str]:
    return [BACKGROUND] + concept_names()


def label_map(scene, classes: list[str], hidden: frozenset[str] = frozenset()) -> np.ndarray:
    """(H, W) uint8: class indices, 255 for dropped shapes and for classes in `hidden`."""
    labels = np.zeros(scene.image.shape[:2], np.uint8)
    for shape in scene.dropped:
        labels[shape.mask] = IGNORE
    for shape in scene.shapes:
        labels[shape.mask] = IGNORE if shape.concept in hidden else classes.index(shape.concept)
    return labels


@dataclass
class SemsegWorldSummary:
    images: int
    out: Path


def write_semseg_world(out: str | os.PathLike, images: int, seed: int, hide_unseen: bool, size: int = 256,
                       progress: bool = True) -> SemsegWorldSummary:
    from tqdm import tqdm

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    classes = semseg_classes()
    hidden = frozenset(UNSEEN) if hide_unseen else frozenset()
    for index in tqdm(range(images), desc="synth-semseg", disable=not progress, unit="img"):
        scene = generate_scene(seed, index, size)
        stem = image_name(index)
        labels = label_map(scene, classes, hidden)
        write_with(out / "images" / f"{stem}.jpg", lambda tmp: Image.fromarray(scene.image).save(tmp, format="JPEG", quality=95))
        write_with(out / "labels" / f"{stem}.png", lambda tmp: Image.fromarray(labels).save(tmp, format="PNG"))
    write_text_atomic(out / "classes.txt", "\n".join(classes) + "\n")
    write_text_atomic(out / "unseen.txt", "\n".join(UNSEEN) + "\n")
    return SemsegWorldSummary(images, out)
