"""Segmentation on synthetic data: GT masks, clicks, IoU, mask AP plumbing, and the click
benchmark driven by an oracle predictor whose answer is known."""

import json

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eval_data import make_dataset
from tapkit.cli.main import main
from tapkit.evaluation.data import load_ground_truth
from tapkit.evaluation.detection_metrics import coco_from_dataset, detection_ap
from tapkit.runtime import Runtime
from tapkit.evaluation.segment import evaluate_points, gt_mask, mask_iou, sample_clicks, segmentation_results
from tapkit.evaluation.setup import EvalSetup
from tapkit.inputs.labels import FOREGROUND, PADDING
from tapkit.models.tap.protocol import TapProtocol
from tapkit.predictor.predictor import DecodedPrompts
from tapkit.utils.rle import encode_rle


def test_gt_mask_from_polygon_and_rle():
    mask = gt_mask([[2, 3, 12, 3, 12, 8, 2, 8]], 20, 30)
    assert mask.shape == (20, 30) and mask[5, 7] and not mask[15, 20]
    assert np.array_equal(gt_mask(encode_rle(mask), 20, 30), mask)


def test_mask_iou_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b[1:3] = True  # 8 pixels, 4 shared
    assert mask_iou(a, b) == pytest.approx(4 / 12)


def test_clicks_lie_in_the_mask_and_depend_only_on_seed_and_id():
    mask = np.zeros((30, 40), bool)
    mask[5:12, 20:31] = True
    clicks = sample_clicks(mask, 5, seed=0, ann_id=7)
    assert all(mask[int(y), int(x)] for x, y in clicks)
    assert len({(x, y) for x, y in clicks.tolist()}) == 5
    assert np.array_equal(clicks, sample_clicks(mask, 5, seed=0, ann_id=7))
    assert not np.array_equal(clicks, sample_clicks(mask, 5, seed=0, ann_id=8))
    tiny = np.zeros((30, 40), bool)
    tiny[3, 4] = True
    assert sample_clicks(tiny, 3, seed=0, ann_id=1).tolist() == [[4, 3]] * 3


@pytest.fixture(scope="module")
def coco_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("coco"), num_images=4, seed=3, lvis=False)


def gt_records(gt, shift: int = 0) -> dict:
    """Records as the box benchmark saves them, with the GT masks (shifted by `shift` px)."""
    records = {}
    for image in gt.images:
        anns = gt.anns_by_image.get(image["id"], [])
        masks = [np.roll(gt_mask(a["segmentation"], image["height"], image["width"]), shift, axis=1) for a in anns]
        records[image["id"]] = {"category_ids": [a["category_id"] for a in anns], "scores": [0.9] * len(anns), "masks": [encode_rle(m) for m in masks]}
    return records


def test_mask_ap_of_gt_masks_is_100_and_drops_when_shifted(coco_data):
    gt = load_ground_truth(coco_data[0])
    image_ids = [im["id"] for im in gt.images]
    coco = coco_from_dataset(gt.dataset)
    assert detection_ap(coco, segmentation_results(image_ids, gt_records(gt)), "segm", "coco")["AP"] == pytest.approx(100.0)
    shifted = detection_ap(coco, segmentation_results(image_ids, gt_records(gt, shift=4)), "segm", "coco")["AP"]
    assert 0.0 < shifted < 100.0


class OraclePredictor:
    """Answers a click with the GT mask that contains it: what a perfect model would do.
    Implements the three predictor methods the click benchmark uses, and lays out its
    prompts as TAP does (`model.protocol`)."""

    def __init__(self, gt):
        self.model = SimpleNamespace(protocol=TapProtocol())
        self.by_pixels = {}
        for image in gt.images:
            masks = [gt_mask(a["segmentation"], image["height"], image["width"]) for a in gt.anns_by_image.get(image["id"], [])]
            self.by_pixels[image["file_name"]] = masks
        self.names = {}
        self.masks = None

    def set_image(self, rgb):
        self.masks = self.by_pixels[self.names[rgb.tobytes()]]

    def decode_points(self, points):
        assert (points[:, -1, 2] == PADDING).all() and (points[:, :-1, 2] == FOREGROUND).all()
        chosen = []
        for prompt in points:
            x, y = int(prompt[0, 0]), int(prompt[0, 1])
            chosen.append(next(m for m in self.masks if m[y, x] and all(m[int(py), int(px)] for px, py, _ in prompt[:-1])))
        logits = torch.from_numpy(np.stack(chosen).astype(np.float32) * 2 - 1)
        n = len(points)
        return DecodedPrompts(logits, torch.ones(n), torch.ones(n, dtype=torch.long), torch.zeros(n, 1), torch.zeros(n, 1))

    def upscale_masks(self, logits):
        return logits.gt(0).numpy()


def test_click_miou_of_an_oracle_is_100(coco_data, tmp_path):
    from tapkit.inputs.image import read_image

    gt_path, images = coco_data
    gt = load_ground_truth(gt_path)
    oracle = OraclePredictor(gt)
    oracle.names = {read_image(images / im["file_name"]).tobytes(): im["file_name"] for im in gt.images}
    for batch in (1, 2):
        setup = EvalSetup(gt_path, images, tmp_path / f"b{batch}", max_batch=batch)
        report = evaluate_points(setup, oracle, {}, Runtime(0, 1, 0, torch.device("cpu")), clicks=(1, 3))
        assert report.metrics == {"mIoU@1": pytest.approx(100.0), "mIoU@3": pytest.approx(100.0)}
        assert report.data["instances"] == len(gt.dataset["annotations"])


def test_box_prompts_from_detections_equal_gt_boxes(coco_data, tiny_files, tmp_path):
    gt_path, images = coco_data
    gt = json.loads(gt_path.read_text())
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0} for a in gt["annotations"]]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    args = ["eval", "segment", "--gt", str(gt_path), "--images-dir", str(images), "--checkpoint", str(tiny_files.checkpoint), "--device", "cpu", "--limit", "1"]
    assert main([*args, "--gt-boxes", "--output-dir", str(tmp_path / "gt")]) == 0
    assert main([*args, "--detections", str(tmp_path / "dets.json"), "--output-dir", str(tmp_path / "det")]) == 0
    from_gt = json.loads((tmp_path / "gt" / "segmentations.json").read_text())
    from_dets = json.loads((tmp_path / "det" / "segmentations.json").read_text())
    assert from_gt == from_dets and len(from_gt) == sum(a["image_id"] == 100 for a in gt["annotations"])
    report = json.loads((tmp_path / "det" / "report.json").read_text())
    assert report["settings"]["protocol"] == "coco" and report["data"]["images"] == 1 and "AP" in report["metrics"]


def test_missing_inputs_are_one_line_errors(coco_data, tiny_files, tmp_path, capsys):
    gt_path, images = coco_data
    base = ["eval", "segment", "--checkpoint", str(tiny_files.checkpoint), "--device", "cpu", "--output-dir", str(tmp_path / "out")]
    cases = [
        (["--gt", str(tmp_path / "nope.json"), "--images-dir", str(images), "--gt-boxes"], "annotation file not found"),
        (["--gt", str(gt_path), "--images-dir", str(tmp_path / "nowhere"), "--gt-boxes"], "images folder not found"),
        (["--gt", str(gt_path), "--images-dir", str(tmp_path), "--gt-boxes"], "images are missing"),
        (["--gt", str(gt_path), "--images-dir", str(images), "--detections", str(gt_path)], "needs image_id, category_id, bbox and score"),
        (["--gt", str(gt_path), "--images-dir", str(images), "--points", "0"], "--points"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
