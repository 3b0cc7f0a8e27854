import numpy as np
import pytest

from tapkit.inputs.labels import BACKGROUND, BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, FOREGROUND, PADDING
from tapkit.training.prompt_sampler import (
    MAX_POINTS,
    box_prompts,
    first_prompts,
    jitter_box,
    mask_box,
    non_interactive_prompts,
    point_from_mask,
    refine_prompts,
)


def _masks(n=6, size=40, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        x, y = rng.integers(0, size - 12, 2)
        w, h = rng.integers(3, 12, 2)
        masks[i, y : y + h, x : x + w] = True
    return masks


def _inside(mask, xy):
    return mask[int(xy[1]), int(xy[0])]


def test_first_prompts_are_a_box_or_one_foreground_point_plus_padding():
    masks = _masks(40)
    p = first_prompts(masks, np.random.default_rng(1))
    assert p.xy.shape == (40, 2, 2) and p.labels.shape == (40, 2)
    assert 5 < p.is_box.sum() < 35  # about half boxes
    for i in range(40):
        if p.is_box[i]:
            assert tuple(p.labels[i]) == (BOX_TOP_LEFT, BOX_BOTTOM_RIGHT)
            x1, y1, x2, y2 = p.xy[i].reshape(-1)
            bx1, by1, bx2, by2 = mask_box(masks[i])
            assert x1 <= bx1 and y1 <= by1 and x2 >= bx2 and y2 >= by2  # jitter only enlarges
        else:
            assert tuple(p.labels[i]) == (FOREGROUND, PADDING)
            assert _inside(masks[i], p.xy[i, 0])


def test_refine_adds_error_points_labelled_by_the_ground_truth():
    masks = _masks(30)
    rng = np.random.default_rng(2)
    first = first_prompts(masks, rng)
    predicted = np.zeros_like(masks)
    predicted[:, :5, :] = True  # false positives in the top rows, the masks' pixels below missed
    refined = refine_prompts(first, masks, predicted, rng)
    num = refined.xy.shape[1] - 2
    assert 1 <= num <= MAX_POINTS - 1
    for i in range(30):
        labels = refined.labels[i]
        if first.is_box[i]:
            assert tuple(labels[:2]) == (BOX_TOP_LEFT, BOX_BOTTOM_RIGHT) and PADDING not in labels
            extra = range(2, 2 + num)
        else:
            assert labels[0] == FOREGROUND and labels[-1] == PADDING and (labels == PADDING).sum() == 1
            extra = range(1, 1 + num)
        for j in extra:
            xy = refined.xy[i, j]
            assert masks[i] [int(xy[1]), int(xy[0])] ^ predicted[i][int(xy[1]), int(xy[0])]  # in the error region
            assert labels[j] == (FOREGROUND if _inside(masks[i], xy) else BACKGROUND)
        assert np.array_equal(refined.xy[i, 0], first.xy[i, 0])


def test_refine_with_a_perfect_prediction_samples_the_mask():
    masks = _masks(5)
    rng = np.random.default_rng(3)
    first = first_prompts(masks, rng, box_prob=0.0)
    refined = refine_prompts(first, masks, masks.copy(), rng)
    for i in range(5):
        for xy, label in zip(refined.xy[i, 1:-1], refined.labels[i, 1:-1]):
            assert label == FOREGROUND and _inside(masks[i], xy)


def test_non_interactive_prompts_are_1_to_9_mask_points_and_padding():
    masks = _masks(8)
    counts = set()
    for seed in range(40):
        p = non_interactive_prompts(masks, np.random.default_rng(seed))
        num = p.xy.shape[1] - 1
        counts.add(num)
        assert 1 <= num <= MAX_POINTS and not p.is_box.any()
        assert (p.labels[:, :-1] == FOREGROUND).all() and (p.labels[:, -1] == PADDING).all()
        for i in range(8):
            assert all(_inside(masks[i], xy) for xy in p.xy[i, :-1])
    assert len(counts) > 5


def test_jitter_stays_in_frame_and_is_bounded():
    rng = np.random.default_rng(0)
    box = np.array([0, 0, 63, 63], np.float32)
    for _ in range(20):
        out = jitter_box(box, rng, 64)
        assert out.min() >= 0 and out.max() <= 63
    small = np.array([30, 30, 34, 34], np.float32)
    for _ in range(50):
        out = jitter_box(small, rng, 1024)
        assert np.all(np.abs(out - small) <= 20.0 + 1e-4)


def test_caption_prompts():
    masks = _masks(4)
    p = point_from_mask(masks, np.random.default_rng(0))
    assert all(_inside(masks[i], p.xy[i, 0]) for i in range(4)) and (p.labels[:, 1] == PADDING).all()
    boxes = np.array([[1, 2, 10, 12]], np.float32)
    b = box_prompts(boxes, np.random.default_rng(0), 64, jitter=False)
    assert np.array_equal(b.xy.reshape(1, 4), boxes) and b.is_box.all()


def test_sampling_is_deterministic_given_the_generator():
    masks = _masks(6)
    a = first_prompts(masks, np.random.default_rng(9))
    b = first_prompts(masks, np.random.default_rng(9))
    assert np.array_equal(a.xy, b.xy) and np.array_equal(a.labels, b.labels)


def test_empty_mask_is_an_invariant_violation():
    with pytest.raises(AssertionError):
        first_prompts(np.zeros((1, 8, 8), bool), np.random.default_rng(0), box_prob=0.0)
