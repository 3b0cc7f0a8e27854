"""Overlay labels of neighbouring regions do not cover each other (issue 14 item 12)."""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw

from tapkit.utils.overlay import _font, draw_overlay, layout_labels, place_boxes


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_neighbouring_regions_get_labels_that_do_not_overlap():
    h, w = 240, 320
    masks = []
    for x in (20, 70, 120, 170):  # four touching 48-px squares in a row, tops level
        m = np.zeros((h, w), bool)
        m[100:148, x:x + 48] = True
        masks.append(m)
    labels = [f"red circle (0.9{i}): a red circle on the left of a blue star" for i in range(4)]
    draw = ImageDraw.Draw(Image.new("RGB", (w, h)))
    boxes = layout_labels(draw, _font(h), masks, labels, w, h)
    assert len(boxes) == 4
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b), (a, b)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # the first label keeps its place, just above its mask's top-left corner
    assert boxes[0][0] == 20 and boxes[0][3] == 100 - 2
    image = draw_overlay(np.zeros((h, w, 3), np.uint8), masks, labels)
    assert image.size == (w, h)


def test_a_free_spot_is_taken_as_is_and_the_nearest_free_one_otherwise():
    boxes = place_boxes([(10, 50), (10, 50), (200, 50)], [(60, 12)] * 3, 300, 200)
    assert boxes[0] == (10, 36, 70, 48) and boxes[2] == (200, 36, 260, 48)
    assert not _overlap(boxes[0], boxes[1]) and abs(boxes[1][1] - 36) <= 12
