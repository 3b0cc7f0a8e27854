"""Typed prediction results and their JSON form."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tapkit.inputs.labels import BACKGROUND, BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, FOREGROUND
from tapkit.utils.rle import encode_rle


def shown_iou(score: float) -> float:
    """The predicted IoU as it is shown (JSON, overlays, the web page): clamped to [0, 1].
    The IoU head is a regression, so the raw value can step a little past 1 (or below 0);
    it estimates the mask's IoU with the object, it is not a probability."""
    return min(1.0, max(0.0, float(score)))


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight [x, y, w, h] box of a bool mask (COCO convention); zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


@dataclass
class Region:
    """What the model says about one prompted region.

    prompt_points: (P, 3) [x, y, label] the prompt as the model saw it (original pixels).
    mask: (H, W) bool at the original resolution. bbox: [x, y, w, h] of the mask.
    score: predicted IoU of the selected mask, as the model gives it (the JSON form clamps it
    to [0, 1], `shown_iou`); mask_index: which of the 4 masks.
    concept / concept_score / concepts: top-1 name and probability, and the top-k list.
    caption: generated text. embedding: the 1024-d semantic embedding."""

    prompt_points: np.ndarray
    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    area: int
    score: float
    mask_index: int
    concept: str | None
    concept_score: float | None
    concepts: list[tuple[str, float]]
    caption: str | None
    embedding: np.ndarray | None

    def prompt_dict(self) -> dict:
        """The prompt in the PROMPTS.json form (points without the padding point; the box
        wherever its corners sit in the family's token order)."""
        labels = self.prompt_points[:, 2].astype(int)
        out: dict = {}
        corners = {label: row for row, label in zip(self.prompt_points, labels) if label in (BOX_TOP_LEFT, BOX_BOTTOM_RIGHT)}
        if len(corners) == 2:
            out["box"] = [float(v) for v in (*corners[BOX_TOP_LEFT][:2], *corners[BOX_BOTTOM_RIGHT][:2])]
        points = [[float(x), float(y), int(lab)] for x, y, lab in self.prompt_points if int(lab) in (BACKGROUND, FOREGROUND)]
        if points:
            out["points"] = points
        return out

    def to_json(self) -> dict:
        return {
            "prompt": self.prompt_dict(),
            "mask": encode_rle(self.mask),
            "bbox": list(self.bbox),
            "area": self.area,
            "score": shown_iou(self.score),
            "concept": self.concept,
            "concept_score": self.concept_score,
            "concepts": [[name, prob] for name, prob in self.concepts],
            "caption": self.caption,
        }
