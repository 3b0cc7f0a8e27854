"""Sharding and resuming: a 2-process gloo run under torchrun equals a single-process run;
a rerun resumes from saved predictions; saved predictions of another run are refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eval_data import make_dataset
from tapkit.cli.main import main
from tapkit.runtime import Runtime
from tapkit.evaluation.store import PredictionStore
from tapkit.testing import random_concepts

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_files):
    root = tmp_path_factory.mktemp("dist")
    gt, images = make_dataset(root, num_images=5, seed=4)
    concepts = random_concepts(root / "c3.pkl", tiny_files.config.image_decoder.sem_embed_dim, ["red square", "green circle", "blue bar"], seed=1)
    args = ["eval", "classify", "--gt", str(gt), "--images-dir", str(images), "--device", "cpu"]
    args += ["--checkpoint", str(tiny_files.checkpoint), "--concepts", str(concepts)]
    return root, args


@pytest.fixture(scope="module")
def single(setup):
    """One process, one thread (as each torchrun worker gets)."""
    root, args = setup
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args, "--output-dir", str(root / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "single"


def read(out: Path) -> tuple[list, dict]:
    return json.loads((out / "detections.json").read_text()), json.loads((out / "report.json").read_text())


def test_two_gloo_processes_equal_one(setup, single):
    root, args = setup
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tapkit.cli.main"]
    proc = subprocess.run([*cmd, *args, "--output-dir", str(root / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (root / "two" / "shards").glob("rank-*.jsonl")) == ["rank-00000.jsonl", "rank-00001.jsonl"]
    assert proc.stdout.count("report:") == 1  # only rank 0 reports
    dets_two, report_two = read(root / "two")
    dets_one, report_one = read(single)
    assert dets_two == dets_one and len(dets_one) > 0
    assert report_two["metrics"] == report_one["metrics"]
    assert report_two["timing"]["processes"] == 2 and report_two["timing"]["images_inferred"] == 5


def test_rerun_resumes_from_saved_predictions(setup, single, tmp_path, capsys):
    _, args = setup
    out = tmp_path / "resumed"
    assert main([*args, "--output-dir", str(out), "--limit", "2"]) == 0
    assert json.loads((out / "report.json").read_text())["data"]["images"] == 2
    shard = out / "shards" / "rank-00000.jsonl"
    shard.write_bytes(shard.read_bytes() + b'{"image_id": 102, "detecti')  # a write cut short by a crash
    assert main([*args, "--output-dir", str(out)]) == 0
    dets, report = read(out)
    assert report["timing"]["images_resumed"] == 2 and report["timing"]["images_inferred"] == 3
    assert dets == read(single)[0]
    # other settings in the same folder: refused in one line, unless --fresh
    capsys.readouterr()
    assert main([*args, "--output-dir", str(out), "--max-dets", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "different run" in err and "max_dets" in err and len(err.splitlines()) == 1
    assert main([*args, "--output-dir", str(out), "--max-dets", "5", "--fresh", "--limit", "1"]) == 0
    assert json.loads((out / "report.json").read_text())["timing"]["images_resumed"] == 0


def test_store_keeps_the_first_record_and_skips_a_torn_line(tmp_path):
    ctx = Runtime(0, 1, 0, torch.device("cpu"))
    store = PredictionStore.open(tmp_path, {"run": 1}, ctx)
    store.append({"image_id": 1, "x": [1.5]})
    store.append({"image_id": 2, "x": []})
    (tmp_path / "rank-00001.jsonl").write_text('{"image_id": 2, "x": [9]}\n{"image_id": 3, "x": [3]}\n{"image_id": 4')
    assert store.done_ids() == {1, 2, 3}
    assert store.read_all() == {1: {"image_id": 1, "x": [1.5]}, 2: {"image_id": 2, "x": []}, 3: {"image_id": 3, "x": [3]}}
