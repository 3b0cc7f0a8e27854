import numpy as np
import pytest

from tapkit.everything.grid import crop_boxes, crop_points, layer_points_per_side, point_grid


def test_point_grid_is_cell_centres_row_major():
    grid = point_grid(2)
    np.testing.assert_allclose(grid, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    big = point_grid(32)
    assert big.shape == (1024, 2) and big.dtype == np.float32
    assert big.min() == pytest.approx(1 / 64) and big.max() == pytest.approx(1 - 1 / 64)
    assert len(np.unique(big, axis=0)) == 1024


def test_point_grid_rejects_empty():
    with pytest.raises(ValueError):
        point_grid(0)


def test_layer_points_per_side():
    assert layer_points_per_side(32, 0, 2) == 32
    assert layer_points_per_side(32, 1, 2) == 16
    assert layer_points_per_side(32, 2, 2) == 8
    assert layer_points_per_side(3, 5, 2) == 1


def test_crop_boxes_single_layer_is_the_image():
    (box,) = crop_boxes(100, 200, 0, 0.3)
    assert box.xyxy() == (0, 0, 200, 100) and box.layer == 0


@pytest.mark.parametrize("height,width", [(100, 200), (333, 250)])
def test_crop_boxes_tile_the_image_with_overlap(height, width):
    ratio = 0.3
    boxes = crop_boxes(height, width, 2, ratio)
    assert [b.layer for b in boxes] == [0] + [1] * 4 + [2] * 16
    for layer, per_side in ((1, 2), (2, 4)):
        tiles = [b for b in boxes if b.layer == layer]
        covered = np.zeros((height, width), dtype=int)
        for b in tiles:
            assert 0 <= b.x0 < b.x1 <= width and 0 <= b.y0 < b.y1 <= height
            covered[b.y0 : b.y1, b.x0 : b.x1] += 1
        assert covered.min() >= 1  # no pixel is left out
        overlap = int(ratio * min(height, width) * 2 / per_side)
        first_row = sorted((b for b in tiles if b.y0 == 0), key=lambda b: b.x0)
        assert first_row[0].x1 - first_row[1].x0 == overlap


def test_crop_points_are_in_crop_pixels():
    (box,) = crop_boxes(10, 20, 0, 0.0)
    pts = crop_points(box, 2)
    np.testing.assert_allclose(pts, [[5, 2.5], [15, 2.5], [5, 7.5], [15, 7.5]])


def test_crop_boxes_of_a_tiny_image_are_never_empty():
    boxes = crop_boxes(1, 3, 2, 0.3)
    assert boxes and all(b.width > 0 and b.height > 0 for b in boxes)
