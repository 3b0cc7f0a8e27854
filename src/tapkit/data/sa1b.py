"""SA-1B reader: one JSON per image ({"image": {...}, "annotations": [...]}) with
COCO-RLE masks, next to the JPEG named by image.file_name."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tapkit.data.records import ImageRecord, Region
from tapkit.errors import UserError


def read_sa1b_json(path: Path) -> ImageRecord:
    """Parses one SA-1B annotation file. Extra keys `concept` and `caption` on an
    annotation (written by the synthetic world) are carried along."""
    data = json.loads(path.read_text())
    info = data["image"]
    regions = [
        Region(
            id=int(a["id"]),
            bbox=tuple(float(v) for v in a["bbox"]),
            segmentation=a["segmentation"],
            concept=a.get("concept"),
            caption=a.get("caption"),
        )
        for a in data["annotations"]
    ]
    image = path.parent / info.get("file_name", path.with_suffix(".jpg").name)
    return ImageRecord(info.get("image_id", path.stem), image, int(info["width"]), int(info["height"]), regions)


def list_sa1b(root: str | os.PathLike) -> list[Path]:
    """The annotation files of an SA-1B directory (sorted, so ranks agree on the order)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"SA-1B directory not found: {root}")
    files = sorted(root.glob("*.json"))
    if not files:
        raise UserError(f"no SA-1B annotation files (*.json) in {root}")
    return files


def read_sa1b(root: str | os.PathLike) -> list[ImageRecord]:
    """Every image record of a directory; unreadable JSON is a user error naming the file."""
    records = []
    for path in list_sa1b(root):
        try:
            records.append(read_sa1b_json(path))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise UserError(f"malformed SA-1B annotation file {path}: {err}") from None
    return records
