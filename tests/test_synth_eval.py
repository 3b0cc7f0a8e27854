import numpy as np
import pytest

from tapkit.training.cider import cider_d
from tapkit.training.synth_eval import evaluate_world, iou, named


def test_cider_d_orders_candidates_and_is_10_for_a_unique_exact_match():
    refs = [["a small red circle left of a blue star"], ["a large green square"], ["a tiny black hexagon above a white ellipse"]]
    exact, scores = cider_d([r[0] for r in refs], refs)
    assert exact == pytest.approx(10.0, rel=1e-6) and all(s == pytest.approx(10.0) for s in scores)
    _, scores = cider_d(["a small red circle", "a large green square", "purple"], refs)
    assert 0 < scores[0] < 10 and scores[1] == pytest.approx(10.0) and scores[2] == 0.0


def test_iou_and_caption_words():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[:1] = True
    assert iou(a, b) == 0.5 and iou(a, a) == 1.0
    # The region's own words come first; the relation's shape does not count.
    assert named("a small red circle left of a blue star") == ("red", "circle")
    assert named("a small blue circle left of a red star") == ("blue", "circle")
    assert named("something") == (None, None)
    assert named("a small striped blue star below a red circle") == ("blue", "star")
    assert named("a large red thing") == ("red", None) and named("") == (None, None)


def test_evaluate_world_runs_the_inference_path(tiny_model, tiny_world):
    report = evaluate_world(tiny_model, tiny_world.sa1b, max_images=2, progress=False)
    assert report.images == 2 and report.regions > 0
    for value in (report.point_miou, report.box_miou, report.concept_top1_box, report.colour_shape_right_box,
                  report.colour_right_box, report.shape_right_box):
        assert 0.0 <= value <= 1.0
    # Both words right implies each is right.
    assert report.colour_shape_right_box <= min(report.colour_right_box, report.shape_right_box)
    assert report.cider_d_box is not None and report.examples
