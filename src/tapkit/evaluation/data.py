"""COCO-style annotation files (COCO, LVIS, the GRiT/TAP VG split) and where their images are."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from tapkit.errors import UserError

# The reference reads LVIS images from a COCO val2017 folder and swaps in train2017
# for images whose coco_url says so (LVIS val draws from both COCO splits).
COCO_SPLITS = ("train2017", "val2017")


class DataError(UserError):
    """An annotation or detection file that cannot be used."""


def read_json(path: str | os.PathLike, what: str):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{what} {path} is not valid JSON: {err}") from None


@dataclass
class GroundTruth:
    """A COCO-style annotation file: `images` and `categories` in file order,
    annotations grouped by image id in file order."""

    path: Path
    dataset: dict
    images: list[dict]
    categories: list[dict]
    anns_by_image: dict

    @property
    def is_lvis(self) -> bool:
        """LVIS files carry category frequencies and per-image negative/not-exhaustive lists."""
        return bool(self.categories) and all("frequency" in c for c in self.categories) and all(
            "neg_category_ids" in im and "not_exhaustive_category_ids" in im for im in self.images
        )

    def ap_protocol(self, requested: str = "auto") -> str:
        """"coco" or "lvis": the requested AP rules, or for "auto" the file's kind."""
        if requested == "auto":
            return "lvis" if self.is_lvis else "coco"
        return requested


def load_ground_truth(path: str | os.PathLike, ann_keys: tuple[str, ...] = ("bbox",)) -> GroundTruth:
    """Reads and checks a COCO-style JSON: images with ids, annotations with
    image_id and `ann_keys`."""
    path = Path(path)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path} is not a COCO-style annotation file (needs 'images' and 'annotations' lists)")
    image_ids = set()
    for image in data["images"]:
        if not isinstance(image, dict) or "id" not in image:
            raise DataError(f"{path}: every image needs an 'id'")
        if image["id"] in image_ids:
            raise DataError(f"{path}: image id {image['id']!r} appears twice")
        image_ids.add(image["id"])
    anns_by_image: dict = defaultdict(list)
    for ann in data["annotations"]:
        missing = [k for k in ("image_id", *ann_keys) if not isinstance(ann, dict) or k not in ann]
        if missing:
            raise DataError(f"{path}: an annotation lacks {', '.join(missing)}: {str(ann)[:120]}")
        if ann["image_id"] not in image_ids:
            raise DataError(f"{path}: annotation for unknown image id {ann['image_id']!r}")
        anns_by_image[ann["image_id"]].append(ann)
    categories = data.get("categories") or []
    return GroundTruth(path, data, data["images"], list(categories), dict(anns_by_image))


def image_candidates(images_dir: Path, image: dict) -> list[Path]:
    """Where an image may be: `file_name` under the folder, else the file named by
    `coco_url` under the folder or under the COCO split folder the URL names."""
    if image.get("file_name"):
        return [images_dir / image["file_name"]]
    url = image.get("coco_url") or image.get("flickr_url")
    if not url:
        raise DataError(f"image {image.get('id')!r} has neither 'file_name' nor 'coco_url'")
    parts = Path(urlparse(url).path).parts
    name, split = parts[-1], (parts[-2] if len(parts) > 1 else "")
    candidates = [images_dir / name]
    if split in COCO_SPLITS:
        if images_dir.name in COCO_SPLITS and images_dir.name != split:
            candidates.insert(0, images_dir.parent / split / name)
        candidates.append(images_dir / split / name)
    return candidates


@dataclass(frozen=True)
class ImageItem:
    """One image to run: its id in the annotation file, its path and its order in the file."""

    index: int
    image_id: object
    path: Path


def select_images(gt: GroundTruth, images_dir: str | os.PathLike, limit: int | None = None) -> list[ImageItem]:
    """The first `limit` images of the file (all if None), with their paths checked up front."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"images folder not found: {images_dir}")
    images = gt.images if limit is None else gt.images[:limit]
    items, missing = [], []
    for index, image in enumerate(images):
        candidates = image_candidates(images_dir, image)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            missing.append(candidates[0])
        else:
            items.append(ImageItem(index, image["id"], path))
    if missing:
        raise DataError(f"{len(missing)} of {len(images)} images are missing under {images_dir} (first: {missing[0]})")
    return items


def xywh_to_xyxy(boxes: list) -> np.ndarray:
    """COCO [x, y, w, h] boxes -> (N, 4) float32 [x1, y1, x2, y2], summed in float64 first
    as the reference does."""
    out = np.zeros((len(boxes), 4), np.float64)
    for i, box in enumerate(boxes):
        try:
            x, y, w, h = (float(v) for v in box)
        except (TypeError, ValueError):
            raise DataError(f"a bbox is [x, y, w, h], got {box!r}") from None
        out[i] = (x, y, x + w, y + h)
    return out.astype(np.float32)
