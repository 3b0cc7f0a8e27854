import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tapkit.cli.main import main
from tapkit.utils.rle import decode_rle


@pytest.fixture
def image_file(tmp_path, rgb_image):
    path = tmp_path / "photo.png"
    Image.fromarray(rgb_image).save(path)
    return path


def _model_args(files):
    return ["--checkpoint", str(files.checkpoint), "--tokenizer", str(files.tokenizer), "--concepts", str(files.concepts), "--device", "cpu"]


def test_predict_end_to_end_writes_json_and_overlay(tiny_files, image_file, tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"points": [[20, 30, 1], [100, 80, 0]]}, {"box": [10, 10, 90, 70]}]))
    out, overlay = tmp_path / "out.json", tmp_path / "out.png"
    argv = ["predict", str(image_file), "--point", "40,30", "--prompts", str(prompts), "--output", str(out), "--overlay", str(overlay), "--top-k", "3"]
    assert main(argv + _model_args(tiny_files)) == 0
    result = json.loads(out.read_text())
    assert result["image"] == {"path": str(image_file), "height": 96, "width": 144}
    regions = result["regions"]
    assert [r["prompt"] for r in regions] == [
        {"points": [[40.0, 30.0, 1]]},
        {"points": [[20.0, 30.0, 1], [100.0, 80.0, 0]]},
        {"box": [10.0, 10.0, 90.0, 70.0]},
    ]
    for r in regions:
        assert set(r) == {"prompt", "mask", "bbox", "area", "score", "concept", "concept_score", "concepts", "caption"}
        mask = decode_rle(r["mask"])
        assert mask.shape == (96, 144) and int(mask.sum()) == r["area"]
        assert len(r["concepts"]) == 3 and r["concept"] == r["concepts"][0][0]
        assert isinstance(r["caption"], str)
    drawn = np.asarray(Image.open(overlay))
    assert drawn.shape == (96, 144, 3)
    assert not np.array_equal(drawn, np.asarray(Image.open(image_file)))


def test_predict_without_tokenizer_or_concepts_gives_nulls(tiny_files, image_file, tmp_path):
    out = tmp_path / "out.json"
    assert main(["predict", str(image_file), "--box", "1,2,50,60", "--checkpoint", str(tiny_files.checkpoint), "--output", str(out)]) == 0
    region = json.loads(out.read_text())["regions"][0]
    assert region["caption"] is None and region["concept"] is None and region["concepts"] == []


def _run_cli(args):
    return subprocess.run([sys.executable, "-m", "tapkit.cli.main", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "case",
    ["missing_ckpt", "corrupt_ckpt", "tokenizer_mismatch", "bad_image", "outside", "empty_list", "bad_point"],
)
def test_user_mistakes_give_one_line_and_exit_code_2(case, tiny_files, image_file, tmp_path):
    from tapkit.testing import train_tokenizer

    args = ["predict", str(image_file), "--point", "40,30", "--output", str(tmp_path / "o.json")]
    model = ["--checkpoint", str(tiny_files.checkpoint)]
    if case == "missing_ckpt":
        model = ["--checkpoint", str(tmp_path / "nope.pkl")]
    elif case == "corrupt_ckpt":
        bad = tmp_path / "bad.pkl"
        bad.write_bytes(b"\x80\x04\x95garbage")
        model = ["--checkpoint", str(bad)]
    elif case == "tokenizer_mismatch":
        model += ["--tokenizer", str(train_tokenizer(tmp_path / "t.model", vocab_size=70))]
    elif case == "bad_image":
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"not an image at all")
        args[1] = str(broken)
    elif case == "outside":
        args[3] = "500,30"
    elif case == "empty_list":
        empty = tmp_path / "p.json"
        empty.write_text("[]")
        args[2:4] = ["--prompts", str(empty)]
    elif case == "bad_point":
        args[3] = "40;30"
    proc = _run_cli(args + model)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tapkit predict: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.json").exists()


def test_convert_to_safetensors_and_back_to_pkl(tiny_files, tmp_path, image_file):
    st, pkl = tmp_path / "m.safetensors", tmp_path / "m.pkl"
    assert main(["convert", str(tiny_files.checkpoint), str(st)]) == 0
    assert main(["convert", str(st), str(pkl)]) == 0
    outs = []
    for ckpt in (tiny_files.checkpoint, st, pkl):
        out = tmp_path / f"{ckpt.name}.json"
        argv = ["predict", str(image_file), "--point", "40,30", "--output", str(out), "--checkpoint", str(ckpt), "--tokenizer", str(tiny_files.tokenizer)]
        assert main(argv) == 0
        outs.append(json.loads(out.read_text())["regions"])
    assert outs[0] == outs[1] == outs[2]


def test_atomic_writes_leave_nothing_behind_and_keep_normal_permissions(tmp_path):
    import os

    from tapkit.utils.atomic import write_text_atomic, write_with

    target = tmp_path / "out" / "result.json"
    write_text_atomic(target, "{}")
    assert target.read_text() == "{}"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_with(target, crash)
    assert target.read_text() == "{}"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_missing_default_model_is_a_clear_error(monkeypatch, image_file, tmp_path, capsys):
    import tapkit.defaults

    monkeypatch.setattr(tapkit.defaults, "ASSETS", tmp_path / "no_assets")
    assert main(["predict", str(image_file), "--point", "40,30", "--output", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "default model" in err[0] and "--checkpoint" in err[0]
