import json

import numpy as np
import pytest
from PIL import Image

import tapkit
from tapkit.checkpoint.io import load_checkpoint, save_safetensors
from tapkit.cli.main import main
from tapkit.everything import EverythingConfig, EverythingGenerator
from tapkit.everything.quality import judge_regions, mask_ious, measure_everything, right_name, summarize


def square(y0, x0, side, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_judge_regions_recall_precision_duplicates_and_names():
    a, b = square(0, 0, 10), square(20, 20, 10)
    truth, names = [a, b], ["red circle", "blue star"]
    # a found twice (one exact, one at IoU 0.81: a duplicate), b named with the wrong shape,
    # one region on nothing.
    near_a = square(0, 0, 9) | square(9, 0, 1)
    assert mask_ious([a], [near_a])[0, 0] >= 0.8
    q = judge_regions(truth, names, [a, near_a, b, square(30, 0, 5)], ["red circle", "green circle", "blue hexagon", "red circle"])
    assert (q.shapes, q.regions, q.found, q.correct, q.duplicates, q.missed) == (2, 4, 1, 2, 1, ["blue star"])
    assert q.max_kept_box_iou == pytest.approx(0.9)  # the boxes of a and near_a: 90 of 100 pixels
    # Without names (a model that cannot name) masks alone decide.
    q = judge_regions(truth, names, [a, b], None)
    assert (q.found, q.correct, q.duplicates) == (2, 2, 0)
    # A mask at IoU below 0.8 does not find the shape but does count as a duplicate from 0.5.
    half = square(0, 0, 10) & ~square(0, 0, 6)
    q = judge_regions([a], ["red circle"], [a, half], ["red circle", "red circle"])
    assert (q.found, q.correct, q.duplicates) == (1, 1, 1)
    assert judge_regions([a], ["red circle"], [], []).found == 0
    assert right_name("blue circle", "red circle") and not right_name("red star", "red circle")
    assert right_name("cat", "cat") and not right_name(None, "red circle")
    total = summarize([("x", judge_regions(truth, names, [a, b], names))], {})
    assert total.recall == 1.0 and total.precision == 1.0 and total.duplicates == 0 and total.max_kept_box_iou == 0.0


def test_measure_everything_on_a_world(tiny_model, tiny_world):
    generator = EverythingGenerator(tiny_model, EverythingConfig(points_per_side=4, pred_iou_thresh=-10, stability_thresh=0,
                                                                  captions=False))
    q = measure_everything(generator, tiny_world.sa1b, max_images=2, progress=False)
    assert q.images == 2 and q.shapes > 0 and q.regions > 0
    assert 0 <= q.recall <= 1 and 0 <= q.precision <= 1
    assert len(q.per_image) == 2 and q.settings["points_per_side"] == 4
    # Box NMS (0.7) bounds the box IoU of any two kept regions.
    assert q.max_kept_box_iou <= generator.config.box_nms_thresh


SHIPPED = {"pred_iou_thresh": 0.55, "stability_thresh": 0.6, "points_per_side": 5, "not_a_setting": 1,
           "max_border_connectivity": 0.3, "rank_by": "stability", "concept_vote_iou": 0.9}


@pytest.fixture()
def shipping_checkpoint(tiny_files, tmp_path):
    """The tiny model as safetensors that ship automatic-mode settings."""
    model = tapkit.load_model(tiny_files.checkpoint)
    path = tmp_path / "shipping.safetensors"
    save_safetensors(model.learned_state_dict(), path, config=model.cfg.to_dict(), everything=SHIPPED)
    return path


def test_settings_travel_with_the_checkpoint_and_given_settings_win(tiny_files, shipping_checkpoint, tmp_path):
    assert load_checkpoint(shipping_checkpoint).everything == SHIPPED
    model = tapkit.load_model(shipping_checkpoint, tokenizer=tiny_files.tokenizer, concepts=tiny_files.concepts)
    assert model.everything_defaults == SHIPPED
    config = EverythingConfig.for_model(model)
    assert (config.pred_iou_thresh, config.stability_thresh, config.points_per_side) == (0.55, 0.6, 5)
    assert config.box_nms_thresh == EverythingConfig().box_nms_thresh  # not shipped: SAM's
    assert EverythingConfig.for_model(model, pred_iou_thresh=0.9).pred_iou_thresh == 0.9
    assert EverythingGenerator(model).config == config
    with pytest.raises(TypeError):
        EverythingConfig.for_model(model, no_such_setting=1)
    # A file without settings: SAM's defaults; convert keeps the shipped settings.
    plain = tapkit.load_model(tiny_files.checkpoint, tokenizer=tiny_files.tokenizer, concepts=tiny_files.concepts)
    assert plain.everything_defaults == {} and EverythingConfig.for_model(plain) == EverythingConfig()
    converted = tmp_path / "converted.safetensors"
    assert main(["convert", str(shipping_checkpoint), str(converted)]) == 0
    assert load_checkpoint(converted).everything == SHIPPED


def test_cli_uses_the_shipped_settings_unless_a_flag_is_given(tiny_files, shipping_checkpoint, tmp_path):
    image = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)).save(image)
    common = [str(image), "--checkpoint", str(shipping_checkpoint), "--tokenizer", str(tiny_files.tokenizer),
              "--concepts", str(tiny_files.concepts), "--no-caption", "--no-progress"]
    assert main(["everything", *common, "-o", str(tmp_path / "a")]) == 0
    settings = json.loads((tmp_path / "a" / "img.png.json").read_text())["settings"]
    assert (settings["pred_iou_thresh"], settings["stability_thresh"], settings["points_per_side"]) == (0.55, 0.6, 5)
    assert main(["everything", *common, "-o", str(tmp_path / "b"), "--pred-iou-thresh", "0.7", "--points-per-side", "3"]) == 0
    settings = json.loads((tmp_path / "b" / "img.png.json").read_text())["settings"]
    assert (settings["pred_iou_thresh"], settings["stability_thresh"], settings["points_per_side"]) == (0.7, 0.6, 3)
    assert (settings["max_border_connectivity"], settings["rank_by"], settings["concept_vote_iou"]) == (0.3, "stability", 0.9)
    flags = ["--max-border-connectivity", "inf", "--rank-by", "iou", "--concept-vote-iou", "0"]
    assert main(["everything", *common, "-o", str(tmp_path / "d"), *flags]) == 0
    settings = json.loads((tmp_path / "d" / "img.png.json").read_text())["settings"]
    assert (settings["max_border_connectivity"], settings["rank_by"], settings["concept_vote_iou"]) == (None, "iou", None)
    assert main(["everything", *common, "-o", str(tmp_path / "c"), "--nms-thresh", "2"]) == 2
