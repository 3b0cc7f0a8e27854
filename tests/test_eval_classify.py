"""Classification: scores -> detections as the reference computes them, and the benchmark
end to end with a concept file built so that the right answer is known (AP 100)."""

import json
import pickle

import numpy as np
import pytest
import torch

from eval_data import make_dataset
from tapkit.cli.main import main
from tapkit.evaluation.classify import boxes_to_detections, nms
from tapkit.evaluation.data import load_ground_truth, xywh_to_xyxy
from tapkit.predictor.predictor import Predictor


def test_nms_drops_boxes_overlapping_more_than_the_threshold():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 4.9], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.95, 0.1], np.float32)
    # box 1 overlaps box 0 by exactly 0.5 (kept); box 2 is inside box 1 (IoU 0.98) and scores higher
    assert nms(boxes, scores, 0.5).tolist() == [2, 0, 3]


def reference_scores(probs, iou):
    """The reference's arithmetic, written out: a (M, 1) x (M,) product broadcast to (M, M);
    NMS ranks by its column 0, the detection score is its last column."""
    box_ind, cls_ind = np.where(probs > 0.001)
    product = np.sqrt(probs[box_ind, cls_ind, None] * np.clip(iou[box_ind], 0, 1))
    return box_ind, cls_ind, product[:, 0], product[:, -1]


def test_reference_scores_match_the_reference_arithmetic():
    rng = np.random.default_rng(0)
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [100, 0, 120, 30], [0, 100, 5, 130]], np.float32)
    logits = rng.normal(0, 3, (4, 6)).astype(np.float32)
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    iou = np.array([0.9, -0.2, 0.4, 1.3], np.float32)
    box_ind, cls_ind, _, last = reference_scores(probs, iou)
    dets = boxes_to_detections(boxes, probs, iou, max_dets=0)
    # the boxes do not overlap, so NMS keeps every (box, class) pair; rows come class by class
    expected = sorted(zip(cls_ind.tolist(), (-last).tolist(), box_ind.tolist()))
    assert [(int(d[4]), -d[5], b) for d, (_, _, b) in zip(dets, expected)] == expected
    assert [d[:4] for d in dets] == [boxes[b].tolist() for _, _, b in expected]
    own = boxes_to_detections(boxes, probs, iou, max_dets=0, score="box-iou")
    assert {(tuple(d[:4]), d[4]): d[5] for d in own} == {
        (tuple(boxes[b].tolist()), int(c)): pytest.approx(float(np.sqrt(probs[b, c] * np.clip(iou[b], 0, 1)))) for b, c in zip(box_ind, cls_ind)
    }


def test_probability_threshold_and_max_dets():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    probs = np.array([[0.001, 0.0011, 0.9979], [0.5, 0.25, 0.25]], np.float32)
    iou = np.ones(2, np.float32)
    dets = boxes_to_detections(boxes, probs, iou, max_dets=0)
    assert sorted((int(d[4]), d[0]) for d in dets) == [(0, 20.0), (1, 0.0), (1, 20.0), (2, 0.0), (2, 20.0)]
    # max_dets 3: the threshold is the 3rd best score, and ties with it survive (0.25 twice)
    kept = boxes_to_detections(boxes, probs, iou, max_dets=3)
    assert sorted(round(d[5] ** 2, 4) for d in kept) == [0.25, 0.25, 0.5, 0.9979]


@pytest.fixture(scope="module")
def lvis_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("lvis"), num_images=4, seed=2)


def oracle_concepts(tiny_model, gt_path, images_dir, path, scale=60.0):
    """A concept file whose column c is built from the tiny model's own embeddings of the
    GT boxes of category c (least squares: every box scores `scale` for its category and
    0 for the others), so classification must be perfect."""
    gt = load_ground_truth(gt_path)
    predictor = Predictor(tiny_model)
    embeds, labels = [], []
    for image in gt.images:
        anns = gt.anns_by_image.get(image["id"], [])
        if not anns:
            continue
        predictor.set_image(images_dir / image["file_name"])
        decoded = predictor.decode_points(predictor.model.protocol.box_prompts(xywh_to_xyxy([a["bbox"] for a in anns])))
        embeds.append(torch.nn.functional.normalize(decoded.sem_embeds.float(), dim=-1).numpy())
        labels += [a["category_id"] for a in anns]
    e = np.concatenate(embeds).astype(np.float64)
    target = np.zeros((len(labels), len(gt.categories)))
    order = [c["id"] for c in gt.categories]
    target[np.arange(len(labels)), [order.index(c) for c in labels]] = scale
    weights = (np.linalg.pinv(e) @ target).astype(np.float32)
    path.write_bytes(pickle.dumps([weights, [c["name"] for c in gt.categories]]))
    return path


def test_classify_end_to_end_with_a_known_answer(lvis_data, tiny_files, tiny_model, tmp_path, capsys):
    gt_path, images = lvis_data
    concepts = oracle_concepts(tiny_model, gt_path, images, tmp_path / "oracle.pkl")
    args = ["eval", "classify", "--gt", str(gt_path), "--images-dir", str(images), "--checkpoint", str(tiny_files.checkpoint), "--device", "cpu"]
    assert main([*args, "--concepts", str(concepts), "--output-dir", str(tmp_path / "right")]) == 0
    table = capsys.readouterr().out
    assert "APr" in table
    report = json.loads((tmp_path / "right" / "report.json").read_text())
    # the images hold no large object: APl is not a number (null, n/a), never -100
    assert report["metrics"]["APl"] is None
    assert any(line.split() == ["APl", "n/a"] for line in table.splitlines()) and "-100" not in table
    assert report["settings"]["protocol"] == "lvis"
    for key in ("AP", "APr", "APc", "APf"):
        assert report["metrics"][key] == pytest.approx(100.0), key
    dets = json.loads((tmp_path / "right" / "detections.json").read_text())
    assert {d["category_id"] for d in dets} == {1, 2, 3}
    # the same weights under shifted names: every box gets a wrong category
    weights, names = pickle.loads(concepts.read_bytes())
    (tmp_path / "shifted.pkl").write_bytes(pickle.dumps([np.roll(weights, 1, axis=1), names]))
    assert main([*args, "--concepts", str(tmp_path / "shifted.pkl"), "--output-dir", str(tmp_path / "wrong")]) == 0
    assert json.loads((tmp_path / "wrong" / "report.json").read_text())["metrics"]["AP"] == pytest.approx(0.0)


def test_classify_needs_a_matching_concept_file(lvis_data, tiny_files, tmp_path, capsys):
    gt_path, images = lvis_data
    code = main(["eval", "classify", "--gt", str(gt_path), "--images-dir", str(images), "--checkpoint", str(tiny_files.checkpoint), "--concepts", str(tiny_files.concepts), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "categories" in err and len(err.splitlines()) == 1
