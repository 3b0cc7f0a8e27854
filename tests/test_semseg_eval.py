"""Semantic-segmentation metrics against a plain numpy confusion matrix on random maps,
the dataset layouts, and `tapkit eval semseg` end to end on the synthetic split
(resumable, seen / unseen mIoU)."""

import json

import numpy as np
import pytest
from PIL import Image

from tapkit.cli.main import main
from tapkit.data.semseg import LAYOUTS, open_dataset, read_class_names
from tapkit.errors import UserError
from tapkit.evaluation.semseg_metrics import confusion, dense, scores, sparse

from san_helpers import tiny_san_folder, tiny_semseg


def reference(preds, gts, n, ignore):
    """mIoU, fwIoU, mACC, pACC (percent) the plain way: a C x C matrix over kept pixels."""
    m = np.zeros((n, n))
    for p, g in zip(preds, gts):
        keep = g != ignore
        for a, b in zip(g[keep], p[keep]):
            m[a, b] += 1
    tp, gt_count, pred_count = np.diag(m), m.sum(1), m.sum(0)
    present = gt_count > 0
    iou = tp[present] / (gt_count + pred_count - tp)[present]
    acc = tp[present] / gt_count[present]
    freq = gt_count[present] / gt_count.sum()
    return 100 * iou.mean(), 100 * (freq * iou).sum(), 100 * acc.mean(), 100 * tp.sum() / gt_count.sum(), iou


@pytest.mark.parametrize("n,ignore", [(5, 255), (12, 65535), (3, 255)])
def test_metrics_match_a_plain_numpy_confusion_matrix(n, ignore):
    rng = np.random.default_rng(n)
    preds = [rng.integers(0, n, (17, 23)) for _ in range(4)]
    gts = []
    for p in preds:
        g = np.where(rng.random(p.shape) < 0.6, p, rng.integers(0, max(n - 1, 1), p.shape))  # class n-1 rarely in GT
        g[rng.random(p.shape) < 0.1] = ignore
        gts.append(g)
    conf = sum(dense(sparse(confusion(p, g, n, ignore)), n) for p, g in zip(preds, gts))
    s = scores(conf)
    miou, fwiou, macc, pacc, iou = reference(preds, gts, n, ignore)
    assert s.miou == pytest.approx(miou) and s.fwiou == pytest.approx(fwiou)
    assert s.macc == pytest.approx(macc) and s.pacc == pytest.approx(pacc)
    assert np.allclose(s.per_class_iou[~np.isnan(s.per_class_iou)], 100 * iou)


def test_labels_outside_the_classes_are_an_error():
    with pytest.raises(ValueError):
        confusion(np.zeros((2, 2), int), np.array([[0, 7], [0, 0]]), 3, 255)


def test_class_names_from_the_datasets_own_files(tmp_path):
    (tmp_path / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n1,0.1,1,1,wall\n2,0.1,1,1,building;edifice\n")
    assert read_class_names(tmp_path / "objectInfo150.csv") == ["wall", "building"]
    (tmp_path / "labels.txt").write_text("1: accordion\n2: aeroplane\n\n")
    assert read_class_names(tmp_path / "labels.txt") == ["accordion", "aeroplane"]
    with pytest.raises(UserError, match="class names not found"):
        read_class_names(tmp_path / "missing.txt")


def test_prepared_layouts_are_found(tmp_path):
    layout = LAYOUTS["ade847"]["val"]
    (tmp_path / layout.images).mkdir(parents=True)
    (tmp_path / layout.labels).mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(tmp_path / layout.images / "ADE_val_1.jpg")
    Image.fromarray(np.full((6, 8), 65535, np.uint16)).save(tmp_path / layout.labels / "ADE_val_1.tif")
    names = tmp_path / "names.txt"
    names.write_text("wall\nfloor\n")
    ds = open_dataset("ade847", tmp_path, classes_file=str(names))
    assert ds.ignore_label == 65535 and ds.classes == ["wall", "floor"] and len(ds.samples) == 1
    with pytest.raises(UserError, match="label maps not found"):
        open_dataset("pc59", tmp_path)


def test_eval_semseg_on_the_synthetic_split_reports_seen_and_unseen(tmp_path, capsys):
    root = tiny_semseg(tmp_path / "eval", images=4, hide_unseen=False)
    san = tiny_san_folder(tmp_path / "model")
    argv = ["eval", "semseg", "--dataset", "synthetic", "--root", str(root), "--checkpoint", str(san),
            "--output-dir", str(tmp_path / "out"), "--device", "cpu"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    m = report["metrics"]
    assert set(m) >= {"mIoU", "fwIoU", "mACC", "pACC", "mIoU_seen", "mIoU_unseen"}
    assert 0 <= m["mIoU"] <= 100 and report["data"]["images"] == 4 and len(report["data"]["per_class"]) == 49
    assert "background" in capsys.readouterr().out
    assert main(argv) == 0  # resumed: nothing left to infer
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    assert again["timing"]["images_resumed"] == 4 and again["metrics"] == m
