"""`tapkit segment`: one image (JSON + label map + overlay, all or none), folders through
the shared job runner (resume, index), and one-line mistakes."""

import json

import numpy as np
import pytest
from PIL import Image

from tapkit.cli.main import main
from tapkit.utils.rle import decode_rle

from san_helpers import tiny_san_folder


@pytest.fixture(scope="module")
def san(tmp_path_factory):
    return tiny_san_folder(tmp_path_factory.mktemp("san"))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in" / "sub"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (40, 56)), ("b.jpg", (48, 48))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    return tmp_path / "in"


def test_one_image_json_label_map_and_overlay(san, images, tmp_path):
    image = images / "sub" / "a.png"
    out = tmp_path / "o"
    argv = ["segment", str(image), "--classes", "red circle, blue star,background", "--checkpoint", str(san),
            "-o", str(out / "a.json"), "--label-map", str(out / "a.png"), "--overlay", str(out / "a.ov.png"), "--device", "cpu"]
    assert main(argv) == 0
    data = json.loads((out / "a.json").read_text())
    labels = np.asarray(Image.open(out / "a.png"))
    assert labels.shape == (40, 56) and data["image"]["height"] == 40
    assert [c["name"] for c in data["classes"]] == ["red circle", "blue star", "background"]
    for c in data["classes"]:
        mask = decode_rle(c["segmentation"])
        assert np.array_equal(mask, labels == c["index"]) and mask.sum() == c["area"]
    assert Image.open(out / "a.ov.png").size[0] > 56  # the legend strip


def test_one_image_mistakes_are_one_line_and_write_nothing(san, images, tmp_path, capsys):
    image = str(images / "sub" / "a.png")
    out = tmp_path / "o.json"
    assert main(["segment", image, "--classes", "a,,b", "-o", str(out), "--checkpoint", str(san)]) == 2
    assert main(["segment", image, "--classes", "a", "-o", str(out), "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert main(["segment", image, "--classes-file", str(tmp_path / "none.txt"), "-o", str(out)]) == 2
    assert main(["segment", image, "--classes", "a", "-o", str(out), "--overlay", str(tmp_path), "--checkpoint", str(san)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") >= 4 and "Traceback" not in err
    assert not out.exists()


def test_folders_resume_and_index(san, images, tmp_path):
    out = tmp_path / "out"
    argv = ["segment", "--input-dir", str(images), "--classes", "red circle,background", "--checkpoint", str(san),
            "-o", str(out), "--label-map", "--overlay", "--index", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    assert {p.name for p in (out / "sub").iterdir()} == {f"{n}{s}" for n in ("a.png", "b.jpg")
                                                        for s in (".json", ".labels.png", ".overlay.png")}
    lines = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["done", "done"]
    stamp = (out / "sub" / "a.png.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "sub" / "a.png.json").stat().st_mtime_ns == stamp  # resumed, not redone


def test_predict_with_a_san_checkpoint_points_to_segment(san, images, capsys):
    argv = ["predict", str(images / "sub" / "a.png"), "--point", "5,5", "--checkpoint", str(san / "model.safetensors")]
    assert main(argv) == 2
    assert "tapkit segment" in capsys.readouterr().err
