import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tapkit
from tapkit.cli.main import main
from tapkit.errors import UserError
from tapkit.everything import EverythingConfig, EverythingGenerator, collect_images, run_batch
from tapkit.everything.batch import write_index

FAST = dict(points_per_side=2, pred_iou_thresh=-100.0, stability_thresh=0.0, captions=False, top_k=2)
FAST_FLAGS = ["--points-per-side", "2", "--pred-iou-thresh", "-100", "--stability-thresh", "0", "--no-caption", "--top-k", "2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def folder(tmp_path):
    """5 small images (2 in a subfolder), a corrupt JPEG and a text file."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        name = f"sub/img{i}.png" if i % 2 else f"img{i}.png"
        Image.fromarray((rng.random((30 + 4 * i, 40, 3)) * 255).astype(np.uint8)).save(root / name)
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def model_flags(files):
    return ["--checkpoint", str(files.checkpoint), "--tokenizer", str(files.tokenizer), "--concepts", str(files.concepts), "--device", "cpu"]


def test_collect_images(folder, tmp_path):
    out = folder / "results"  # outputs inside the input folder are not inputs
    out.mkdir()
    Image.new("RGB", (4, 4)).save(out / "old.overlay.png")
    jobs = collect_images(input_dir=folder, exclude=out)
    assert [j.key for j in jobs] == ["broken.jpg", "img0.png", "img2.png", "img4.png", "sub/img1.png", "sub/img3.png"]
    listing = tmp_path / "list.txt"
    listing.write_text("# images\nimages/img0.png\n\nimages/sub/img1.png\nimages/img0.png\nimages/missing.png\n")
    jobs = collect_images(file_list=listing)
    assert [j.key for j in jobs] == ["img0.png", "missing.png", "sub/img1.png"]
    assert jobs[0].result_path(tmp_path / "o") == tmp_path / "o" / "img0.png.json"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "target.png")
    (folder / "link.png").symlink_to(outside / "target.png")
    (folder / "img0_again.png").symlink_to(folder / "img0.png")  # the same image twice
    keys = [j.key for j in collect_images(input_dir=folder, exclude=out)]
    assert "link.png" in keys and "img0.png" in keys and "img0_again.png" not in keys and len(keys) == 7
    with pytest.raises(UserError, match="image not found"):
        collect_images(images=[folder / "nope.png"])
    with pytest.raises(UserError, match="input folder not found"):
        collect_images(input_dir=folder / "nope")
    with pytest.raises(UserError, match="no images"):
        collect_images(input_dir=folder / "results", exclude=folder / "results")


def test_resume_skips_done_images_and_reports_corrupt_ones(tiny_model, folder, tmp_path):
    generator = EverythingGenerator(tiny_model, EverythingConfig(**FAST))
    jobs = collect_images(input_dir=folder)
    out = tmp_path / "out"
    first = run_batch(generator, jobs, out, progress=False)
    assert (first.assigned, first.already_done, first.processed) == (6, 0, 5)
    assert [Path(p).name for p, _ in first.failed] == ["broken.jpg"] and "cannot read image" in first.failed[0][1]
    results = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert results == ["img0.png.json", "img2.png.json", "img4.png.json", "sub/img1.png.json", "sub/img3.png.json"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}

    second = run_batch(generator, jobs, out, progress=False)
    assert (second.already_done, second.processed, len(second.failed)) == (5, 0, 1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.json")} == stamps

    (out / "img2.png.json").unlink()  # as if the job died before this image
    third = run_batch(generator, jobs, out, progress=False)
    assert (third.already_done, third.processed) == (4, 1)
    assert (out / "img2.png.json").is_file()
    again = run_batch(generator, jobs, out, overwrite=True, progress=False)
    assert again.processed == 5


def test_index_lists_every_image(tiny_model, folder, tmp_path):
    generator = EverythingGenerator(tiny_model, EverythingConfig(**FAST))
    jobs = collect_images(input_dir=folder)
    out = tmp_path / "out"
    run_batch(generator, jobs[:3], out, index_parts=True, progress=False)
    counts = write_index(jobs, out, out / "index.jsonl")
    assert counts == {"done": 2, "failed": 1, "missing": 3}
    lines = [json.loads(t) for t in (out / "index.jsonl").read_text().splitlines()]
    assert [line["key"] for line in lines] == [j.key for j in jobs]
    done = lines[1]
    assert done["status"] == "done" and done["result"] == "img0.png.json"
    assert done["regions"] == len(json.loads((out / "img0.png.json").read_text())["regions"])
    assert lines[0]["status"] == "failed" and "cannot read image" in lines[0]["error"]


def test_two_gloo_ranks_share_the_work(tiny_files, tiny_model, folder, tmp_path):
    out = tmp_path / "out"
    jobs = collect_images(input_dir=folder)
    # one image done by an earlier run (without an index): it must be skipped, not redone
    done_before = jobs[2]
    run_batch(EverythingGenerator(tiny_model, EverythingConfig(**FAST)), [done_before], out, progress=False)
    stamp = done_before.result_path(out).stat().st_mtime_ns

    src = Path(tapkit.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tapkit.cli.main",
               "everything", "--input-dir", str(folder), "--output", str(out), "--index", "--overlay", "--no-progress",
               *FAST_FLAGS, *model_flags(tiny_files)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # sorted: broken.jpg, img0, img2 (done before), img4, sub/img1, sub/img3
    assert "rank 0/2: images processed 1, already done 1, failed 1;" in proc.stderr
    assert "rank 1/2: images processed 3, already done 0, failed 0;" in proc.stderr
    assert f"failed: {folder / 'broken.jpg'}" in proc.stderr

    lines = [json.loads(t) for t in (out / "index.jsonl").read_text().splitlines()]
    assert [line["key"] for line in lines] == [j.key for j in jobs]
    for position, line in enumerate(lines):
        if line["key"] == done_before.key:
            assert line["status"] == "done" and "rank" not in line
        elif line["key"] == "broken.jpg":
            assert line["status"] == "failed" and line["rank"] == 0
        else:  # rank r took images r, r + 2, ... of the sorted list
            assert line["status"] == "done" and line["rank"] == position % 2
            assert (out / f"{line['key']}.overlay.png").is_file()
            data = json.loads((out / line["result"]).read_text())
            assert data["image"]["path"] == str(folder / line["key"]) and len(data["regions"]) == line["regions"]
    assert done_before.result_path(out).stat().st_mtime_ns == stamp


def test_cli_single_image(tiny_files, tmp_path, rgb_image, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(rgb_image).save(image)
    out = tmp_path / "out"
    assert main(["everything", str(image), "-o", str(out), "--overlay", "--no-progress", "--max-regions", "2", *FAST_FLAGS, *model_flags(tiny_files)]) == 0
    data = json.loads((out / "photo.png.json").read_text())
    assert data["image"]["height"] == rgb_image.shape[0] and 1 <= len(data["regions"]) <= 2
    assert data["settings"]["max_regions"] == 2 and (out / "photo.png.overlay.png").is_file()
    assert "images processed 1, already done 0, failed 0" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["missing.png"], ["--input-dir", "missing_dir"], ["--points-per-side", "0", "x.png"]])
def test_cli_user_errors(tiny_files, tmp_path, capsys, monkeypatch, extra):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    monkeypatch.chdir(tmp_path)
    assert main(["everything", "-o", str(tmp_path / "out"), *extra, *model_flags(tiny_files)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tapkit everything: error:")


def test_everything_exits_non_zero_when_every_input_failed(folder, tiny_files, tmp_path, capsys):
    broken = folder / "broken.jpg"
    code = main(["everything", str(broken), "--output", str(tmp_path / "none"), *FAST_FLAGS, "--no-progress", *model_flags(tiny_files)])
    err = capsys.readouterr().err
    assert code == 1 and "nothing was processed: all 1 image(s) failed" in err, err
    code = main(["everything", str(broken), str(folder / "img0.png"), "--output", str(tmp_path / "some"), *FAST_FLAGS,
                 "--no-progress", *model_flags(tiny_files)])
    assert code == 0 and "failed: " in capsys.readouterr().err  # one of two failed: the run still did its work
