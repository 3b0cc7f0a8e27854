"""Visual Genome region descriptions in the densecap / GRiT COCO-style JSON: each
box annotation has a "caption"."""

from __future__ import annotations

import os

from tapkit.data.coco_style import group_records, load_json
from tapkit.data.records import ImageRecord, Region


def read_vg(annotations: str | os.PathLike, image_root: str | os.PathLike) -> list[ImageRecord]:
    data = load_json(annotations)

    def to_region(ann: dict) -> Region:
        return Region(id=int(ann["id"]), bbox=tuple(float(v) for v in ann["bbox"]), caption=str(ann["caption"]).strip())

    return group_records(data, image_root, to_region)
