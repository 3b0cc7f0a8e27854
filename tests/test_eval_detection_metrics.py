"""Box/mask AP: the COCO path equals pycocotools used directly; the LVIS rules give
hand-computed answers on a tiny LVIS-style file."""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from tapkit.evaluation.detection_metrics import coco_ap, coco_from_dataset, limit_per_image, lvis_ap

# 101-point interpolation: recall 0.5 reached at precision 1 covers 51 of 101 thresholds.
HALF_RECALL_AP = 100.0 * 51 / 101


def lvis_gt() -> dict:
    """Image 1: a cat-1 and a cat-2 box. Image 2: a cat-1 box, cat 2 known absent.
    Image 3: a cat-3 box, nothing known about cat 2. Frequencies: 1 f, 2 c, 3 r."""
    boxes = {1: [(1, 1, [10, 10, 40, 40]), (2, 2, [60, 10, 30, 30])], 2: [(3, 1, [20, 20, 50, 50])], 3: [(4, 3, [5, 5, 20, 20])]}
    anns = [
        {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": float(bbox[2] * bbox[3])}
        for image_id, items in boxes.items()
        for ann_id, cat, bbox in items
    ]
    images = [
        {"id": 1, "height": 100, "width": 100, "neg_category_ids": [3], "not_exhaustive_category_ids": []},
        {"id": 2, "height": 100, "width": 100, "neg_category_ids": [2], "not_exhaustive_category_ids": []},
        {"id": 3, "height": 100, "width": 100, "neg_category_ids": [], "not_exhaustive_category_ids": []},
    ]
    cats = [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b", "frequency": "c"}, {"id": 3, "name": "c", "frequency": "r"}]
    return {"images": images, "annotations": anns, "categories": cats}


def perfect(gt: dict, score: float = 0.9) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score} for a in gt["annotations"]]


def det(image_id, cat, bbox, score):
    return {"image_id": image_id, "category_id": cat, "bbox": bbox, "score": score}


def test_lvis_perfect_detections_score_100_in_every_group():
    gt = lvis_gt()
    m = lvis_ap(coco_from_dataset(gt), perfect(gt), "bbox")
    assert m["AP"] == pytest.approx(100.0) and m["APr"] == pytest.approx(100.0)
    assert m["APc"] == pytest.approx(100.0) and m["APf"] == pytest.approx(100.0)
    assert m["AR@300"] == pytest.approx(100.0)


def test_lvis_false_positive_counts_only_where_the_category_is_known():
    gt = lvis_gt()
    fp = [10, 60, 20, 20]
    # cat 2 is in image 2's negative list: a higher-scoring false positive there halves AP of cat 2
    m = lvis_ap(coco_from_dataset(gt), perfect(gt, 0.5) + [det(2, 2, fp, 0.9)], "bbox")
    assert m["APc"] == pytest.approx(50.0)
    assert m["AP"] == pytest.approx((100 + 50 + 100) / 3)
    # image 3 says nothing about cat 2: the same detection there is dropped
    m = lvis_ap(coco_from_dataset(gt), perfect(gt, 0.5) + [det(3, 2, fp, 0.9)], "bbox")
    assert m["APc"] == pytest.approx(100.0)
    # plain COCO rules count it
    assert coco_ap(coco_from_dataset(gt), perfect(gt, 0.5) + [det(3, 2, fp, 0.9)], "bbox")["AP"] < 100.0


def test_lvis_unmatched_detection_of_a_not_exhaustive_category_is_ignored():
    gt = lvis_gt()
    extra = det(1, 1, [70, 70, 20, 20], 0.95)
    assert lvis_ap(coco_from_dataset(gt), perfect(gt, 0.5) + [extra], "bbox")["APf"] < 100.0
    gt["images"][0]["not_exhaustive_category_ids"] = [1]
    assert lvis_ap(coco_from_dataset(gt), perfect(gt, 0.5) + [extra], "bbox")["APf"] == pytest.approx(100.0)


def test_lvis_keeps_300_detections_per_image():
    gt = lvis_gt()
    rng = np.random.default_rng(0)
    # 300 higher-scoring detections of cat 3 (absent from image 2) push out image 2's true cat-1 box
    flood = [det(2, 3, [float(x), float(y), 5.0, 5.0], 0.8) for x, y in rng.integers(0, 90, (300, 2))]
    m = lvis_ap(coco_from_dataset(gt), perfect(gt, 0.5) + flood, "bbox")
    assert m["APf"] == pytest.approx(HALF_RECALL_AP)
    m = lvis_ap(coco_from_dataset(gt), perfect(gt, 0.5) + flood[:299], "bbox")
    assert m["APf"] == pytest.approx(100.0)


def test_limit_per_image_is_a_stable_sort_grouped_by_image():
    results = [{"image_id": i % 2, "score": s, "n": n} for n, (i, s) in enumerate([(0, 0.5), (1, 0.9), (0, 0.7), (0, 0.5), (0, 0.1)])]
    kept = limit_per_image(results, 3)
    assert [r["n"] for r in kept] == [2, 0, 3, 1]


def test_coco_ap_equals_pycocotools_used_directly():
    gt = lvis_gt()
    rng = np.random.default_rng(1)
    results = [
        det(int(rng.integers(1, 4)), int(rng.integers(1, 4)), [float(v) for v in rng.integers(0, 60, 2)] + [float(v) for v in rng.integers(5, 50, 2)], float(rng.random()))
        for _ in range(40)
    ] + perfect(gt, 0.6)
    ours = coco_ap(coco_from_dataset(gt), copy.deepcopy(results), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = coco_from_dataset(gt)
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [ours[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")] == [None if v == -1 else 100.0 * v for v in ev.stats]
    assert 0 < ours["AP"] < 100


def test_no_detections_score_zero():
    gt = lvis_gt()
    assert lvis_ap(coco_from_dataset(gt), [], "bbox")["AP"] == 0.0
    assert coco_ap(coco_from_dataset(gt), [], "bbox")["AP"] == 0.0
