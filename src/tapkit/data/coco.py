"""COCO / LVIS instance segmentation reader (polygons or RLE; the category name is
the region's concept)."""

from __future__ import annotations

import os

from tapkit.data.coco_style import group_records, load_json
from tapkit.data.records import ImageRecord, Region


def read_coco(annotations: str | os.PathLike, image_root: str | os.PathLike, skip_crowd: bool = True) -> list[ImageRecord]:
    data = load_json(annotations)
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    if skip_crowd:
        data = {**data, "annotations": [a for a in data["annotations"] if not a.get("iscrowd", 0)]}

    def to_region(ann: dict) -> Region:
        return Region(
            id=int(ann["id"]),
            bbox=tuple(float(v) for v in ann["bbox"]),
            segmentation=ann.get("segmentation"),
            concept=names.get(ann.get("category_id")),
        )

    return group_records(data, image_root, to_region)
