"""Semantic-segmentation datasets in the layouts detectron2's / SAN's prepare scripts
write (under one datasets root, as DETECTRON2_DATASETS), and the synthetic world's.

Each is a list of (image, label map) pairs, the class names (read from the dataset's
own files) and the ignore label (255 for PNG maps, 65535 for 16-bit TIFF ones)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tapkit.errors import UserError


@dataclass(frozen=True)
class Layout:
    """Folders relative to the root: images, label maps and their extensions; `names`:
    where the class names live (relative to the root), in the order of the label values."""

    images: str
    labels: str
    label_ext: str
    ignore_label: int
    names: str


LAYOUTS: dict[str, dict[str, Layout]] = {
    "ade150": {"val": Layout("ADEChallengeData2016/images/validation", "ADEChallengeData2016/annotations_detectron2/validation",
                             ".png", 255, "ADEChallengeData2016/objectInfo150.csv")},
    "ade847": {"val": Layout("ADE20K_2021_17_01/images_detectron2/validation",
                             "ADE20K_2021_17_01/annotations_detectron2/validation", ".tif", 65535,
                             "ADE20K_2021_17_01/objects.txt")},
    "pc59": {"val": Layout("pcontext/val/image", "pcontext/val/label", ".png", 255, "pcontext/labels.txt")},
    "pc459": {"val": Layout("pcontext_full/val/image", "pcontext_full/val/label", ".tif", 65535, "pcontext_full/labels.txt")},
    "voc20": {"val": Layout("VOC2012/JPEGImages", "VOC2012/annotations_detectron2/val", ".png", 255, "VOC2012/labels.txt")},
    "cocostuff171": {
        "train": Layout("coco/train2017", "coco/stuffthingmaps_detectron2/train2017", ".png", 255, "coco/labels.txt"),
        "val": Layout("coco/val2017", "coco/stuffthingmaps_detectron2/val2017", ".png", 255, "coco/labels.txt"),
    },
    "synthetic": {"val": Layout("images", "labels", ".png", 255, "classes.txt"),
                  "train": Layout("images", "labels", ".png", 255, "classes.txt")},
}
DATASETS = tuple(LAYOUTS)


@dataclass
class SemsegDataset:
    name: str
    samples: list[tuple[Path, Path]]  # (image, label map)
    classes: list[str]
    ignore_label: int
    unseen: tuple[str, ...] = ()  # classes scored apart (the synthetic split)


def read_class_names(path: Path) -> list[str]:
    """One name per line (`labels.txt` / `classes.txt`, optionally 'id: name' or 'id name'),
    or ADE's objectInfo150.csv (column Name, first synonym) / objects.txt (tab separated,
    the name column)."""
    if not path.is_file():
        raise UserError(f"class names not found: {path} (give --classes-file)")
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return [row["Name"].split(";")[0].strip() for row in csv.DictReader(f)]
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        if "\t" in line:
            line = line.split("\t")[-1]
        head, sep, rest = line.partition(":")
        if sep and head.strip().isdigit():
            line = rest
        names.append(line.strip().split(";")[0].strip())
    return names


def read_label_map(path: Path) -> np.ndarray:
    """(H, W) int64 class indices as stored (uint8 PNG or 16-bit TIFF)."""
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def open_dataset(dataset: str, root: str | os.PathLike, split: str = "val", classes_file: str | None = None) -> SemsegDataset:
    if dataset not in LAYOUTS:
        raise UserError(f"unknown dataset '{dataset}'; choose from {', '.join(DATASETS)}")
    if split not in LAYOUTS[dataset]:
        raise UserError(f"dataset {dataset} has no {split} split in tapkit ({', '.join(LAYOUTS[dataset])})")
    layout, root = LAYOUTS[dataset][split], Path(root)
    images, labels = root / layout.images, root / layout.labels
    if not labels.is_dir():
        raise UserError(f"{dataset}: label maps not found at {labels} (prepare the dataset with its prepare script)")
    samples = []
    for label in sorted(labels.glob(f"*{layout.label_ext}")):
        image = images / f"{label.stem}.jpg"
        if not image.is_file() and (images / f"{label.stem}.png").is_file():
            image = images / f"{label.stem}.png"
        if not image.is_file():
            raise UserError(f"{dataset}: no image {image} for label map {label.name}")
        samples.append((image, label))
    if not samples:
        raise UserError(f"{dataset}: no *{layout.label_ext} label maps in {labels}")
    classes = read_class_names(Path(classes_file) if classes_file else root / layout.names)
    unseen_file = root / "unseen.txt"
    unseen = tuple(read_class_names(unseen_file)) if dataset == "synthetic" and unseen_file.is_file() else ()
    return SemsegDataset(dataset, samples, classes, layout.ignore_label, unseen)
