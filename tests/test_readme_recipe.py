"""The README's "Train your own" recipe runs as written (issue 14 item 3): its commands are
read out of README.md and run in order through the real `tapkit` entry point, in a folder
holding a copy of configs/ and examples/, with only the sizes made tiny (fewer and smaller
images, a few steps). Also: resuming says where it resumes and refuses a changed config or
architecture, and a failed run leaves no run folder."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest

from tapkit.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
# Only sizes change; every path, file name and option of the README stays as it is.
TINY_TRAIN = ["--set", "steps=2", "--set", "batch_images=2", "--set", "ckpt_every=1", "--set", "log_every=1",
              "--set", "data.prompts_per_image=2", "--no-progress"]
TINY_IMAGES = "64"


def recipe_commands(heading: str = "## Train your own") -> list[list[str]]:
    """The `tapkit` command lines of the first bash block under a README heading, as argv lists."""
    section = (ROOT / "README.md").read_text().split(heading, 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv and argv[0] == "tapkit":
            commands.append(argv[1:])
    return commands


def tiny(argv: list[str]) -> list[str]:
    argv = list(argv)
    if argv[:2] == ["data", "synth"]:
        argv[argv.index("--images") + 1] = "6"  # the world's names are all there from the first image on
        argv += ["--size", TINY_IMAGES]
    if argv[0] == "train":
        argv += TINY_TRAIN
        if "default_segment" in argv[1]:  # stage 2 takes the architecture from stage 1's weights
            argv += ["--set", f"model.image_encoder.image_size={TINY_IMAGES}"]
    return argv


@pytest.fixture
def clone(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "src"))  # imports after the chdir find this checkout
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def test_the_recipe_has_the_steps_it_promises():
    names = [" ".join(argv[:2]) for argv in recipe_commands()]
    assert names == ["data synth", "concepts build", "data semantic", "data tokenizer", "train configs/default_segment.yaml",
                     "train configs/recipe_caption.yaml", "predict examples/shapes.png"]


def test_the_readme_recipe_runs_as_written(clone, capsys, one_torch_thread):
    for argv in recipe_commands():
        code = main(tiny(argv))
        out = capsys.readouterr()
        assert code == 0, f"tapkit {' '.join(argv)} -> {code}: {out.err[-2000:]}"
    assert (clone / "runs" / "default_segment" / "model.safetensors").is_file()
    export = clone / "runs" / "recipe_caption" / "model.safetensors"
    umask = os.umask(0)
    os.umask(umask)
    assert export.stat().st_mode & 0o777 == 0o666 & ~umask  # like any new file, not 0600
    assert '"caption"' in out.out  # the last command printed the trained model's regions


def test_a_failed_run_leaves_no_run_folder(clone, capsys):
    code = main(["train", "configs/default_segment.yaml", *TINY_TRAIN])  # no data built: the tokenizer is missing
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "scratch/tokenizer.model" in err, err
    assert not (clone / "runs").exists()


def test_an_encoder_depth_the_model_cannot_take(clone, capsys):
    code = main(["train", "configs/default_segment.yaml", "--set", "model.image_encoder.depth=2"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        "tapkit train: error: image encoder depth must be a multiple of 4 (a cross-window block closes each quarter "
        "of the encoder), got 2"]
    assert not (clone / "runs").exists()


def test_the_readme_clip_commands_run_as_written(clone, capsys, one_torch_thread):
    commands = recipe_commands("## CLIP\n")
    assert [" ".join(argv[:2]) for argv in commands] == ["data synth", "concepts build", "data evaluate-clip"]
    for argv in commands:
        code = main(tiny(argv))
        out = capsys.readouterr()
        assert code == 0, f"tapkit {' '.join(argv)} -> {code}: {out.err[-2000:]}"
    assert (clone / "concepts.pkl").is_file() and "top1" in out.out.replace("_", "").lower()
