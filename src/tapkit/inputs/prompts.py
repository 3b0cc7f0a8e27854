"""Visual prompts and their encoding as labelled points, following the reference:
box corners first (labels 2, 3), then clicks (1 foreground, 0 background); a
prompt without a box ends with one padding point (label 4). A sketch (a polyline
or a binary mask) becomes 9 foreground points spread over its pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from tapkit.errors import UserError
from tapkit.inputs.labels import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, FOREGROUND, PADDING

SKETCH_POINTS = 9


class PromptError(UserError):
    """A malformed prompt or one that lies outside the image."""


def mask_to_points(mask: np.ndarray, num: int = SKETCH_POINTS) -> np.ndarray:
    """`num` (x, y) points linearly spaced over the mask's pixels in row-major order
    (the reference's rule for sketches), (num, 2) float32."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise PromptError("the sketch is empty")
    keep = np.linspace(0, ys.shape[0], num + 2, dtype=np.int64)[1:-1]
    return np.stack([xs[keep], ys[keep]], axis=1).astype(np.float32)


def rasterize_polyline(polyline: np.ndarray, width: int = 1) -> tuple[np.ndarray, tuple[int, int]]:
    """Draws a polyline on a canvas covering its bounding box.
    Returns (mask, (x0, y0)) where (x0, y0) is the canvas origin in image pixels."""
    pts = np.round(polyline).astype(np.int64)
    x0, y0 = pts.min(axis=0) - width
    x1, y1 = pts.max(axis=0) + width
    canvas = Image.new("1", (int(x1 - x0 + 1), int(y1 - y0 + 1)), 0)
    local = [(int(x - x0), int(y - y0)) for x, y in pts]
    draw = ImageDraw.Draw(canvas)
    if len(local) == 1:
        draw.point(local, fill=1)
    else:
        draw.line(local, fill=1, width=width, joint="curve")
    return np.asarray(canvas, dtype=bool), (int(x0), int(y0))


def is_polyline(sketch) -> bool:
    """A sketch is a polyline when it is (N, 2) numbers, whatever N; a mask is a boolean
    (H, W) array (or one whose second axis is not 2)."""
    array = np.asarray(sketch)
    return array.ndim == 2 and array.shape[1] == 2 and array.dtype != bool


def sketch_to_points(sketch, width: int = 1) -> np.ndarray:
    """A sketch given as a binary mask (H, W) or a polyline [(x, y), ...] -> (9, 2) points."""
    array = np.asarray(sketch)
    if is_polyline(array):
        mask, (x0, y0) = rasterize_polyline(array.astype(np.float64), width)
        return mask_to_points(mask) + np.array([x0, y0], np.float32)
    if array.ndim == 2:
        return mask_to_points(array.astype(bool))
    raise PromptError("a sketch is a polyline [[x, y], ...] or a binary mask of the image's size")


@dataclass(frozen=True)
class Prompt:
    """A visual prompt in original image pixels.

    points: (x, y, label) clicks, label 1 = foreground, 0 = background.
    box: (x1, y1, x2, y2). sketch: a polyline [(x, y), ...] of any length or an (H, W)
    boolean mask."""

    points: Sequence[Sequence[float]] = field(default_factory=tuple)
    box: Sequence[float] | None = None
    sketch: object | None = None

    def to_dict(self) -> dict:
        out: dict = {}
        if len(self.points):
            out["points"] = [[float(p[0]), float(p[1]), int(p[2]) if len(p) > 2 else 1] for p in self.points]
        if self.box is not None:
            out["box"] = [float(v) for v in self.box]
        if self.sketch is not None:
            sketch = np.asarray(self.sketch)
            out["sketch"] = sketch.tolist() if is_polyline(sketch) else "mask"
        return out

    @classmethod
    def from_dict(cls, data) -> "Prompt":
        """Parses the JSON form {"points": [[x, y, label], ...], "box": [x1, y1, x2, y2], "sketch": [[x, y], ...]}."""
        if not isinstance(data, dict):
            raise PromptError(f"a prompt must be an object with 'points' and/or 'box', got {type(data).__name__}")
        unknown = set(data) - {"points", "box", "sketch"}
        if unknown:
            raise PromptError(f"unknown prompt keys: {', '.join(sorted(unknown))}")
        return cls(points=tuple(tuple(p) for p in data.get("points") or ()), box=data.get("box"), sketch=data.get("sketch"))


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise PromptError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _check_inside(x: float, y: float, width: int, height: int, what: str) -> None:
    if not (0 <= x <= width and 0 <= y <= height):
        raise PromptError(f"{what} ({x:g}, {y:g}) lies outside the {width}x{height} image")


def encode_prompt(prompt: Prompt, width: int, height: int, dtype=np.float32) -> np.ndarray:
    """Validates a prompt against the image size and returns its labelled points,
    (P, 3) [x, y, label] in original pixels (float32 unless `dtype` says otherwise),
    in TAP's order: box corners, clicks, sketch points, then a padding point when
    there is no box."""
    rows: list[tuple[float, float, int]] = []
    if prompt.box is not None:
        box = list(prompt.box) if isinstance(prompt.box, (list, tuple, np.ndarray)) else None
        if box is None or len(box) != 4:
            raise PromptError(f"a box is [x1, y1, x2, y2], got {prompt.box!r}")
        x1, y1, x2, y2 = (_number(v, "box coordinate") for v in box)
        if x2 < x1 or y2 < y1:
            raise PromptError(f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] needs x1 <= x2 and y1 <= y2")
        _check_inside(x1, y1, width, height, "box corner")
        _check_inside(x2, y2, width, height, "box corner")
        rows += [(x1, y1, BOX_TOP_LEFT), (x2, y2, BOX_BOTTOM_RIGHT)]
    for point in prompt.points:
        if not isinstance(point, (list, tuple, np.ndarray)) or len(point) not in (2, 3):
            raise PromptError(f"a point is [x, y] or [x, y, label], got {point!r}")
        x, y = _number(point[0], "point x"), _number(point[1], "point y")
        label = 1 if len(point) == 2 else point[2]
        if label not in (0, 1) or isinstance(label, bool):
            raise PromptError(f"point labels are 1 (foreground) or 0 (background), got {label!r}")
        _check_inside(x, y, width, height, "point")
        rows.append((x, y, int(label)))
    if prompt.sketch is not None:
        sketch = np.asarray(prompt.sketch)
        if sketch.ndim == 2 and not is_polyline(sketch) and sketch.shape != (height, width):
            raise PromptError(f"a sketch mask must be {height}x{width}, got {sketch.shape[0]}x{sketch.shape[1]}")
        for x, y in sketch_to_points(sketch):
            _check_inside(float(x), float(y), width, height, "sketch point")
            rows.append((float(x), float(y), FOREGROUND))
    if not rows:
        raise PromptError("empty prompt: give points, a box or a sketch")
    if prompt.box is None:
        rows.append((0.0, 0.0, PADDING))
    return np.array(rows, dtype=dtype)


def click_points(clicks: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(N, K, 2) foreground clicks -> (N, K + 1, 3) [x, y, label]: the clicks, then one
    padding point (the layout of a prompt without a box in TAP and in SAM)."""
    n, k = clicks.shape[:2]
    out = np.zeros((n, k + 1, 3), dtype)
    out[:, :k, :2] = clicks
    out[:, :k, 2] = FOREGROUND
    out[:, k, 2] = PADDING
    return out


def box_points(boxes_xyxy: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(N, 4) [x1, y1, x2, y2] -> (N, 2, 3) [x, y, label]: the two corners, labels 2 and 3.
    Boxes are not clipped to the image (evaluation boxes may overhang, as in the reference)."""
    out = np.empty((len(boxes_xyxy), 2, 3), dtype)
    out[:, :, :2] = np.asarray(boxes_xyxy).reshape(-1, 2, 2)
    out[:, 0, 2], out[:, 1, 2] = BOX_TOP_LEFT, BOX_BOTTOM_RIGHT
    return out
