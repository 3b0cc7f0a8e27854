"""Shared parsing of COCO-style JSON (images + annotations), used by the COCO/LVIS
and Visual Genome (densecap / GRiT) readers."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable

from tapkit.data.records import ImageRecord, Region
from tapkit.errors import UserError


def load_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"malformed JSON in {path}: {err}") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise UserError(f"{path} is not a COCO-style file (needs 'images' and 'annotations')")
    return data


def image_path(image: dict, image_root: Path) -> Path:
    """COCO gives file_name; LVIS gives coco_url (its last part is the file name)."""
    name = image.get("file_name") or str(image.get("coco_url", "")).rsplit("/", 1)[-1]
    return image_root / name


def group_records(data: dict, image_root: str | os.PathLike, to_region: Callable[[dict], Region]) -> list[ImageRecord]:
    by_image: dict = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append(to_region(ann))
    root = Path(image_root)
    records = []
    for image in data["images"]:
        regions = by_image.get(image["id"], [])
        if regions:
            records.append(ImageRecord(image["id"], image_path(image, root), int(image["width"]), int(image["height"]), regions))
    return records
