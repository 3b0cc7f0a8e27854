"""The packaged default model: present, within the size limit, loadable without any
flag, and usable by the README's first command."""

import json
from pathlib import Path

import numpy as np

import tapkit
from tapkit.cli.main import main
from tapkit.data.synth import concept_names
from tapkit.defaults import default_model_files

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes.png"


def test_default_model_files_are_packaged_and_small():
    files = default_model_files()
    assert files.checkpoint.stat().st_size <= 15 * 1024 * 1024
    assert files.tokenizer is not None and files.concepts is not None
    model = tapkit.load_model(files.checkpoint, tokenizer=files.tokenizer, concepts=files.concepts, device="cpu")
    assert model.text_decoder is not None and len(model.concepts) == 48
    assert all(p.dtype.is_floating_point for p in model.parameters())


def test_readme_first_command_runs_offline(tmp_path, capsys):
    overlay, output = tmp_path / "out.png", tmp_path / "out.json"
    code = main(["predict", str(EXAMPLE), "--point", "120,80", "--overlay", str(overlay), "--output", str(output)])
    assert code == 0 and overlay.is_file()
    (region,) = json.loads(output.read_text())["regions"]
    assert region["concept"] in concept_names()
    assert isinstance(region["caption"], str) and region["area"] > 0
    from tapkit.utils.rle import decode_rle

    mask = decode_rle(region["mask"])
    assert mask.shape == (240, 320) and np.count_nonzero(mask) == region["area"]


def test_load_model_without_a_path_is_the_packaged_model_with_its_companions():
    model = tapkit.load_model(device="cpu")
    assert model.family == "tap" and model.can_name and model.can_caption
    predictor = tapkit.Predictor(model)
    predictor.set_image(str(EXAMPLE))
    (region,) = predictor.predict([tapkit.Prompt(points=[(120, 80, 1)])])
    assert region.concept is not None and region.caption


def test_predictor_refuses_what_is_not_a_promptable_model():
    import pytest

    with pytest.raises(TypeError, match="promptable model"):
        tapkit.Predictor(None)


def test_packaged_model_ships_its_automatic_mode_settings():
    from tapkit.everything import EverythingConfig

    model = tapkit.load_model(device="cpu")
    shipped = model.everything_defaults
    assert shipped, "the packaged model ships the thresholds it was measured with (docs/everything.md)"
    config = EverythingConfig.for_model(model)
    assert all(getattr(config, name) == value for name, value in shipped.items())
    assert config != EverythingConfig()
