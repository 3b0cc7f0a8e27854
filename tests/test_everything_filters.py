import numpy as np
import pytest
import torch

from tapkit.everything.filters import box_iou, mask_boxes, near_crop_edge, nms, remove_small_regions, stability_score


def test_stability_score_on_hand_made_logits():
    logits = torch.full((3, 8, 8), -5.0)
    logits[0, :4, :4] = 5.0  # 16 pixels certain
    logits[0, 4, :4] = 0.5  # 4 pixels unsure: inside at -1, outside at +1
    logits[1, :2, :2] = 3.0  # fully certain
    # logits[2]: empty at both thresholds
    score = stability_score(logits, offset=1.0)
    assert score.tolist() == pytest.approx([16 / 20, 1.0, 0.0])
    assert stability_score(logits, offset=0.25)[0].item() == pytest.approx(1.0)


def test_mask_boxes_are_exclusive_and_zero_for_empty():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:6] = True
    masks[0, 7, 11] = True
    boxes = mask_boxes(masks)
    assert boxes.tolist() == [[3, 2, 12, 8], [0, 0, 0, 0]]


def test_box_iou():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])


def test_nms_keeps_best_and_is_greedy():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [3, 0, 13, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.9, 0.4, 0.8])
    # box 1 suppresses 0 and 2 (IoU 0.82 and 0.67 > 0.6); 3 overlaps nothing
    assert nms(boxes, scores, 0.6).tolist() == [1, 3]
    # at 0.7, box 2 (IoU 0.67 with box 1) survives; box 0 (0.82) does not
    assert nms(boxes, scores, 0.7).tolist() == [1, 3, 2]
    # a suppressed box suppresses nothing: 0 kills 1, 1 would have killed 2
    chain = torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]])
    assert nms(chain, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_nms_ties_keep_input_order():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    assert nms(boxes, torch.ones(3), 0.5).tolist() == [0]
    assert nms(boxes, torch.ones(3), 1.0).tolist() == [0, 1, 2]


def test_near_crop_edge_ignores_image_edges():
    crop, image = (0, 0, 50, 50), (0, 0, 100, 100)
    boxes = torch.tensor([[0.0, 0, 20, 20], [10, 10, 49, 30], [10, 10, 30, 45], [10, 10, 20, 20]])
    assert near_crop_edge(boxes, crop, image, atol=5).tolist() == [False, True, True, False]


def test_remove_small_regions_fills_holes_and_drops_islands():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5:7, 5:7] = False  # a 4-pixel hole
    mask[16:18, 16:18] = True  # a 4-pixel island
    cleaned, changed = remove_small_regions(mask, min_area=5)
    expected = np.zeros((20, 20), dtype=bool)
    expected[2:12, 2:12] = True
    assert changed and np.array_equal(cleaned, expected)
    same, changed = remove_small_regions(expected, min_area=5)
    assert not changed and np.array_equal(same, expected)


def test_remove_small_regions_keeps_the_largest_of_small_islands():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:2, 0:2] = True
    mask[5:8, 5:7] = True
    cleaned, changed = remove_small_regions(mask, min_area=50)
    # the background touches the border, so it is not a hole however small it is
    assert changed and cleaned.sum() == 6 and cleaned[5:8, 5:7].all()


def test_remove_small_regions_only_fills_enclosed_holes():
    mask = np.ones((10, 10), dtype=bool)
    mask[0:2, 4:6] = False  # a notch at the border
    mask[4:6, 4:6] = False  # a hole
    cleaned, changed = remove_small_regions(mask, min_area=10)
    assert changed and not cleaned[0:2, 4:6].any() and cleaned[4:6, 4:6].all()


def test_mask_nms_drops_a_mask_whose_far_island_hides_it_from_box_nms():
    from tapkit.everything.filters import mask_nms

    shape = np.zeros((40, 40), bool)
    shape[5:15, 5:15] = True
    with_island = shape.copy()
    with_island[35:37, 35:37] = True  # its box is 32 x 32: box IoU with the shape's 0.1
    other = np.zeros((40, 40), bool)
    other[20:30, 0:10] = True
    boxes = mask_boxes(torch.from_numpy(np.stack([shape, with_island, other])))
    assert box_iou(boxes[:1], boxes[1:2]).item() < 0.15
    assert nms(boxes, torch.tensor([0.8, 0.9, 0.7]), 0.5).tolist() == [1, 0, 2]
    # mask IoU 100 / 104: the island's mask goes first (higher score) and suppresses the shape's
    assert mask_nms([shape, with_island, other], [0.8, 0.9, 0.7], 0.5) == [1, 2]
    assert mask_nms([shape, with_island, other], [0.8, 0.9, 0.7], 0.99) == [1, 0, 2]
    assert mask_nms([shape, shape], [0.5, 0.5], 0.5) == [0] and mask_nms([], [], 0.5) == []
    # subsampled for large masks: the same answer on a 4x larger copy
    big = [np.kron(m, np.ones((4, 4), bool)) for m in (shape, with_island, other)]
    assert mask_nms(big, [0.8, 0.9, 0.7], 0.5, max_side=40) == [1, 2]


def test_border_connectivity_is_border_pixels_over_root_area():
    from tapkit.everything.filters import border_connectivity

    masks = torch.zeros(4, 20, 30, dtype=torch.bool)
    masks[0, 5:9, 5:9] = True  # inside: 0
    masks[1, 0:4, :] = True  # a strip along the top: 30 border pixels of 30 + 2 * 3 = 36 on the ring
    masks[2, 16:20, 26:30] = True  # a corner square: 7 ring pixels (the corner once), area 16
    # masks[3] empty
    assert border_connectivity(masks).tolist() == pytest.approx([0.0, 36 / 120**0.5, 7 / 4, 0.0])
    # only the sides that are image sides count (a crop's inner sides are not the border)
    only_top = border_connectivity(masks, (True, False, False, False))
    assert only_top.tolist() == pytest.approx([0.0, 30 / 120**0.5, 0.0, 0.0])
