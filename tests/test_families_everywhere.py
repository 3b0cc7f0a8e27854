"""SAM and SCA checkpoints through the other front ends: `tapkit everything`, the
server and the evaluation benchmarks, which are written against the family-neutral
model interface."""

import json

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import tapkit
from eval_data import make_dataset
from tapkit.cli.main import main
from tapkit.everything import EverythingConfig, EverythingGenerator
from tapkit.models.sca.build import build_sca, save_sca
from tapkit.models.sca.config import MixerConfig
from tapkit.models.sca.tokenizer import load_caption_tokenizer
from tapkit.testing import randomize

OPEN_FILTERS = ["--points-per-side", "3", "--pred-iou-thresh", "-100", "--stability-thresh", "0", "--no-progress"]


@pytest.fixture(scope="module")
def sca_checkpoint(tmp_path_factory, tiny_sam_checkpoint, tiny_files):
    root = tmp_path_factory.mktemp("sca")
    tok = load_caption_tokenizer(tiny_files.tokenizer)
    torch.manual_seed(0)
    lm = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=32, n_layer=1,
                                                              n_head=2, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id))
    model = build_sca(tapkit.load_model(tiny_sam_checkpoint, device="cpu"), lm, tok, MixerConfig(depth=1, num_caption_tokens=2, num_heads=2, mlp_dim=32),
                      max_new_tokens=4)
    randomize(model.mixer, 1)
    (root / "tok.model").write_bytes(tiny_files.tokenizer.read_bytes())
    save_sca(model, root / "sca.safetensors", tokenizer_name="tok.model")
    return root / "sca.safetensors"


@pytest.fixture
def image_file(tmp_path, rgb_image):
    path = tmp_path / "img.png"
    Image.fromarray(rgb_image).save(path)
    return path


@pytest.mark.parametrize("family", ["sam", "sca"])
def test_everything_cli(family, tiny_sam_checkpoint, sca_checkpoint, image_file, tmp_path):
    checkpoint = tiny_sam_checkpoint if family == "sam" else sca_checkpoint
    out = tmp_path / "out"
    assert main(["everything", str(image_file), "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu", *OPEN_FILTERS]) == 0
    result = json.loads(next(out.rglob("*.json")).read_text())
    assert result["regions"]
    for region in result["regions"]:
        assert region["concept"] is None and region["mask_index"] in (1, 2, 3)
        assert (region["caption"] is None) == (family == "sam")


def test_everything_captions_are_the_predictors(sca_checkpoint, rgb_image):
    """The automatic mode's SCA caption of a grid point is the one the predictor gives that click."""
    model = tapkit.load_model(sca_checkpoint, device="cpu")
    result = EverythingGenerator(model, EverythingConfig(points_per_side=2, pred_iou_thresh=-100, stability_thresh=0, masks_per_point="best")).generate(rgb_image)
    predictor = tapkit.Predictor(model)
    predictor.set_image(rgb_image)
    for region in result.regions:
        alone = predictor.predict([tapkit.Prompt(points=[(*region.point, 1)])])[0]
        assert alone.mask_index == region.mask_index and alone.caption == region.caption


@pytest.mark.parametrize("family", ["sam", "sca"])
def test_server_answers_for_sam_and_sca(family, tiny_sam_checkpoint, sca_checkpoint, rgb_image):
    from fastapi.testclient import TestClient

    from serve_helpers import encode, upload
    from tapkit.serve.app import create_app

    model = tapkit.load_model(tiny_sam_checkpoint if family == "sam" else sca_checkpoint, device="cpu")
    with TestClient(create_app(model)) as client:
        health = client.get("/healthz").json()
        assert health["model"]["captions"] == (family == "sca")
        image = upload(client, encode(rgb_image, "PNG")).json()
        image_id = image.get("id") or image.get("image_id")
        regions = client.post(f"/v1/images/{image_id}/regions", json={"prompts": [{"points": [[50, 30, 1]]}, {"box": [20, 10, 100, 70]}]})
        assert regions.status_code == 200
        for region in regions.json()["regions"]:
            assert region["concept"] is None and (region["caption"] is None) == (family == "sam")
        assert client.post(f"/v1/images/{image_id}/everything").status_code == 200


def test_segment_benchmark_with_sam(tiny_sam_checkpoint, tmp_path):
    gt, images = make_dataset(tmp_path / "coco", num_images=2, seed=3, lvis=False)
    out = tmp_path / "seg"
    args = ["eval", "segment", "--gt", str(gt), "--images-dir", str(images), "--checkpoint", str(tiny_sam_checkpoint), "--device", "cpu"]
    assert main([*args, "--gt-boxes", "--output-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["family"] == "sam" and report["metrics"]


def test_caption_benchmark_with_sca(sca_checkpoint, tmp_path):
    gt, images = make_dataset(tmp_path / "vg", num_images=2, seed=1)
    out = tmp_path / "cap"
    args = ["eval", "caption", "--gt", str(gt), "--images-dir", str(images), "--output-dir", str(out), "--metrics", "BLEU",
            "--checkpoint", str(sca_checkpoint), "--device", "cpu"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["family"] == "sca" and report["settings"]["max_text_len"] == 4
    assert all(isinstance(p["caption"], str) for p in json.loads((out / "predictions.json").read_text()))
    assert np.isfinite(report["metrics"]["BLEU-1"])
