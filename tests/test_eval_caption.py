"""Caption metrics: same numbers as pycocoevalcap used directly, predictions-file matching,
and the caption benchmark end to end on a tiny model."""

import json

import pytest

from eval_data import make_dataset
from tapkit.cli.main import main
from tapkit.evaluation.caption import caption_pairs, captions_from_predictions, load_caption_gt
from tapkit.evaluation.caption_metrics import score_captions

REFS = {
    "1_region_0": ["A red circle, left of the square."],
    "1_region_1": ["a big green square"],
    "2_region_0": ["two blue triangles"],
    "2_region_1": ["a yellow star"],
}
CANDS = {"1_region_0": "a red circle", "1_region_1": "a green square", "2_region_0": "a blue triangle", "2_region_1": ""}


def test_scores_equal_pycocoevalcap_used_directly(monkeypatch):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor import meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    scorer = meteor.Meteor()  # one METEOR process for both (it takes seconds to start)
    monkeypatch.setattr(meteor, "Meteor", lambda: scorer)
    ours = score_captions(REFS, CANDS, ("BLEU", "METEOR", "ROUGE-L", "CIDEr")).metrics
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": c}] for k, c in CANDS.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    direct = {f"BLEU-{i + 1}": 100 * b for i, b in enumerate(bleu)}
    direct["METEOR"] = 100 * scorer.compute_score(gts, res)[0]
    direct["ROUGE-L"] = 100 * Rouge().compute_score(gts, res)[0]
    direct["CIDEr"] = 100 * Cider().compute_score(gts, res)[0]
    assert ours == direct
    assert 0 < ours["CIDEr"] and 0 < ours["METEOR"] < 100


def test_bleu1_by_hand():
    # "a red circle" vs "a red square": 2 of 3 unigrams match, equal lengths (no brevity penalty)
    m = score_captions({"k": ["a red square"]}, {"k": "a red circle"}, ("BLEU",)).metrics
    assert m["BLEU-1"] == pytest.approx(100 * 2 / 3, abs=1e-4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("vg"), num_images=2, seed=1)


def test_predictions_match_by_id_and_by_box(data):
    gt = load_caption_gt(data[0])
    anns = gt.dataset["annotations"]
    preds = [{"id": a["id"], "caption": f"c{a['id']}"} for a in anns[::2]]
    preds += [{"image_id": a["image_id"], "bbox": a["bbox"], "caption": f"c{a['id']}"} for a in anns[1::2]]
    captions = captions_from_predictions(gt, preds)
    image_ids = [im["id"] for im in gt.images]
    refs, cands = caption_pairs(gt, image_ids, captions)
    assert list(cands.values()) == [f"c{a['id']}" for image_id in image_ids for a in gt.anns_by_image[image_id]]
    assert list(refs)[0] == f"{image_ids[0]}_region_0"


def test_predictions_errors_are_one_line(data, tmp_path, capsys):
    gt_path, _ = data
    gt = load_caption_gt(gt_path)
    first = next(anns[0] for anns in gt.anns_by_image.values() if len(anns) > 1)
    cases = {
        "unknown": [{"id": 99999, "caption": "x"}],
        "twice": [{"id": first["id"], "caption": "x"}, {"id": first["id"], "caption": "y"}],
        "missing": [{"id": first["id"], "caption": "x"}],
    }
    expected = {"unknown": "no annotation has id", "twice": "already has a caption", "missing": "have no prediction"}
    for name, preds in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(preds))
        code = main(["eval", "caption", "--gt", str(gt_path), "--predictions", str(path), "--output-dir", str(tmp_path / name)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and expected[name] in err, (name, err)


def test_missing_java_is_reported_in_one_line(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    path = tmp_path / "p.json"
    path.write_text("[]")
    code = main(["eval", "caption", "--gt", str(data[0]), "--predictions", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Java is missing" in err


def test_caption_benchmark_end_to_end_and_rescoring(data, tiny_files, tmp_path, capsys):
    gt_path, images = data
    out = tmp_path / "cap"
    model = ["--checkpoint", str(tiny_files.checkpoint), "--tokenizer", str(tiny_files.tokenizer), "--device", "cpu"]
    metrics = ["--metrics", "BLEU,ROUGE-L,CIDEr"]
    assert main(["eval", "caption", "--gt", str(gt_path), "--images-dir", str(images), "--output-dir", str(out), *metrics, *model]) == 0
    assert "CIDEr" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    preds = json.loads((out / "predictions.json").read_text())
    gt = json.loads(gt_path.read_text())
    assert len(preds) == len(gt["annotations"]) == report["data"]["regions"]
    assert all(isinstance(p["caption"], str) for p in preds)
    assert set(report["metrics"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
    assert report["timing"]["images_inferred"] == 2 and report["model"]["checkpoint"]["bytes"] > 0
    # the saved predictions, scored without a model, give the same numbers
    again = tmp_path / "again"
    assert main(["eval", "caption", "--gt", str(gt_path), "--predictions", str(out / "predictions.json"), "--output-dir", str(again), *metrics]) == 0
    assert json.loads((again / "report.json").read_text())["metrics"] == report["metrics"]
