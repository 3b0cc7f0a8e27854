"""What a new user trips over (issue 14), through the real command: one line on stderr and
exit 2 for each mistake, nothing left behind, sketches of any length, clamped scores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tapkit.cli.main import join_negative_values, main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shapes.png"


@pytest.fixture
def image_file(tmp_path, rgb_image):
    path = tmp_path / "photo.png"
    Image.fromarray(rgb_image).save(path)
    return path


def _tiny(files):
    return ["--checkpoint", str(files.checkpoint), "--tokenizer", str(files.tokenizer), "--concepts", str(files.concepts), "--device", "cpu"]


def one_line_error(capsys, argv, command="predict") -> str:
    """Runs `tapkit ARGV`; it must exit 2 with one line on stderr and no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tapkit {command}: error:"), err
    return lines[0]


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ---------------------------------------------------------------- sketches (item 4)


def test_a_long_polyline_is_read_as_a_sketch_not_a_mask(tiny_files, image_file, tmp_path):
    xs = np.linspace(20, 120, 5000)
    polyline = [[float(x), 40.0] for x in xs]  # 5000 points along y = 40
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"sketch": polyline}]))
    out = tmp_path / "out.json"
    assert main(["predict", str(image_file), "--prompts", str(prompts), "--output", str(out), *_tiny(tiny_files)]) == 0
    (region,) = json.loads(out.read_text())["regions"]
    points = np.array(region["prompt"]["points"])
    assert points.shape == (9, 3) and (points[:, 2] == 1).all()
    assert np.abs(points[:, 1] - 40).max() <= 1 and points[:, 0].min() >= 19 and points[:, 0].max() <= 121
    assert np.ptp(points[:, 0]) > 50  # spread along the stroke


# ---------------------------------------------------------------- outputs (item 5)


def test_output_naming_an_existing_directory(capsys, tiny_files, image_file, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    line = one_line_error(capsys, ["predict", str(image_file), "--point", "40,30", "--output", str(folder), *_tiny(tiny_files)])
    assert "is a directory" in line and "--output" in line
    assert list(folder.iterdir()) == []


def test_an_unwritable_overlay_leaves_no_json_behind(capsys, tiny_files, image_file, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = tmp_path / "out.json"
    argv = ["predict", str(image_file), "--point", "40,30", "--output", str(out), "--overlay", str(blocker / "o.png"), *_tiny(tiny_files)]
    line = one_line_error(capsys, argv)
    assert "--overlay" in line and "not a directory" in line
    assert leftovers(tmp_path, {"photo.png", "a_file"}) == []


def test_several_outputs_are_written_all_or_none(tmp_path):
    from tapkit.utils.atomic import OutputError, write_all_atomic

    def fail(tmp):
        raise OSError(28, "No space left on device")

    first, second = tmp_path / "new" / "a.json", tmp_path / "new" / "deeper" / "b.png"
    with pytest.raises(OutputError, match=r"cannot write .*b\.png: No space left on device"):
        write_all_atomic([(first, lambda tmp: tmp.write_text("{}")), (second, fail)])
    assert list(tmp_path.iterdir()) == []  # no file, no temporary, no folder it made
    write_all_atomic([(first, lambda tmp: tmp.write_text("{}")), (second, lambda tmp: tmp.write_bytes(b"png"))])
    assert first.read_text() == "{}" and second.read_bytes() == b"png"
    assert sorted(p.name for p in first.parent.rglob("*")) == ["a.json", "b.png", "deeper"]


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "meta"])
def test_an_unknown_device(capsys, tiny_files, image_file, device):
    argv = ["predict", str(image_file), "--point", "40,30", "--checkpoint", str(tiny_files.checkpoint), "--device", device]
    line = one_line_error(capsys, argv)
    assert device in line and "cpu, cuda or cuda:N" in line


# ---------------------------------------------------------------- messages (item 6)


def test_negative_numbers_are_values_not_options(capsys, tiny_files, image_file):
    assert join_negative_values(["predict", "x.png", "--box", "-10,-10,50,50", "--point", "-1,2"]) == [
        "predict", "x.png", "--box=-10,-10,50,50", "--point=-1,2"]
    line = one_line_error(capsys, ["predict", str(image_file), "--box", "-10,-10,50,50", *_tiny(tiny_files)])
    assert "box corner (-10, -10) lies outside the 144x96 image" in line


def test_negative_box_through_the_installed_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tapkit.cli.main", "predict", str(EXAMPLE), "--box", "-10,-10,50,50"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["tapkit predict: error: box corner (-10, -10) lies outside the 320x240 image"]


def test_a_preset_that_does_not_fit_names_the_preset(capsys, tiny_files, image_file):
    line = one_line_error(capsys, ["predict", str(image_file), "--point", "40,30", "--preset", "tap_vit_b", *_tiny(tiny_files)])
    assert "--preset tap_vit_b does not fit" in line and "tokenizer" not in line


def test_predict_on_a_directory(capsys, tmp_path):
    line = one_line_error(capsys, ["predict", str(tmp_path), "--point", "1,1"])
    assert "is a directory" in line and "everything --input-dir" in line and "not found" not in line


def test_stand_in_dim_zero(capsys, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("red circle\nblue square\n")
    line = one_line_error(capsys, ["concepts", "build", "--names", str(names), "--out", str(tmp_path / "c.pkl"),
                                   "--stand-in-dim", "0"], "concepts")
    assert "--stand-in-dim" in line and ">= 1" in line and "exactly one" not in line
    assert not (tmp_path / "c.pkl").exists()


# ---------------------------------------------------------------- scores (item 7)


def test_shown_scores_are_clamped_to_0_1_on_the_readme_example(tmp_path):
    out = tmp_path / "out.json"
    assert main(["predict", str(EXAMPLE), "--point", "120,80", "--device", "cpu", "--output", str(out)]) == 0
    assert 0.0 <= json.loads(out.read_text())["regions"][0]["score"] <= 1.0


def test_an_iou_head_past_one_is_clamped_in_the_json(tiny_model, tmp_path, rgb_image):
    import torch

    import tapkit
    from tapkit.checkpoint.io import save_safetensors

    head = tiny_model.image_decoder.iou_pred
    last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    saved = last.bias.detach().clone()
    try:
        with torch.no_grad():
            last.bias += 5.0  # the raw predicted IoU now lies well above 1
        predictor = tapkit.Predictor(tiny_model)
        predictor.set_image(rgb_image)
        (region,) = predictor.predict([tapkit.Prompt(points=[(40, 30, 1)])], captions=False)
        assert region.score > 1.5
        assert region.to_json()["score"] == 1.0
        path = tmp_path / "high_iou.safetensors"
        save_safetensors(tiny_model.learned_state_dict(), path, config=tiny_model.cfg.to_dict())
    finally:
        with torch.no_grad():
            last.bias.copy_(saved)
    image, out = tmp_path / "img.png", tmp_path / "out.json"
    Image.fromarray(rgb_image).save(image)
    assert main(["predict", str(image), "--point", "40,30", "--checkpoint", str(path), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["regions"][0]["score"] == 1.0


def test_a_closed_pipe_ends_quietly_without_a_traceback(tiny_files, image_file):
    import subprocess
    import sys

    command = [sys.executable, "-m", "tapkit.cli.main", "predict", str(image_file), "--point", "10,10",
               "--checkpoint", str(tiny_files.checkpoint)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the JSON is printed
    stderr = process.stderr.read().decode()
    process.wait(120)
    assert "Traceback" not in stderr and process.returncode == 141
