"""Tiny training set-ups shared by the training tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from tapkit.data.sa1b import read_sa1b
from tapkit.data.semantic import StandInTeacher, build_semantic
from tapkit.data.synth import concept_names, write_world
from tapkit.data.text_encoders import HashText, concept_weights, write_concept_file
from tapkit.training.tokenizer import train_sentencepiece


@dataclass
class TinyWorld:
    root: Path
    sa1b: Path
    vg: Path
    coco: Path
    concepts: Path
    semantic: Path
    tokenizer: Path


def make_tiny_world(root: Path, images: int = 6, size: int = 64) -> TinyWorld:
    write_world(root / "world", images, seed=3, size=size, progress=False)
    names = concept_names()
    text = HashText(64)
    weights = concept_weights(names, text)
    concepts = write_concept_file(root / "concepts.pkl", weights, names)
    build_semantic(read_sa1b(root / "world" / "sa1b"), StandInTeacher(text), torch.from_numpy(weights), root / "semantic",
                   progress=False)
    captions = [a["caption"] for a in json.loads((root / "world" / "vg_regions.json").read_text())["annotations"]]
    tokenizer = train_sentencepiece(captions, root / "tok.model", vocab_size=64)
    world = root / "world"
    return TinyWorld(root, world / "sa1b", world / "vg_regions.json", world / "coco_instances.json", concepts,
                     root / "semantic", tokenizer)


def tiny_train_config(world: TinyWorld, out_dir: Path, stage: str = "segment", **overrides) -> dict:
    cfg = {
        "stage": stage,
        "out_dir": str(out_dir),
        "steps": 4,
        "batch_images": 2,
        "log_every": 1,
        "ckpt_every": 2,
        "model": {
            "tokenizer": str(world.tokenizer),
            "concepts": str(world.concepts),
            "image_encoder": {"depth": 4, "embed_dim": 32, "num_heads": 2, "window_size": 4, "image_size": 64, "out_dim": 32},
            "image_decoder": {"embed_dim": 32, "depth": 2, "num_heads": 1, "mlp_dim": 64, "cross_attn_dim": 16, "sem_embed_dim": 64},
            "text_decoder": {"depth": 1, "embed_dim": 64, "num_heads": 1, "prompt_embed_dim": 32},
        },
        "data": {"sa1b": str(world.sa1b), "semantic": str(world.semantic), "vg": str(world.vg), "image_root": str(world.sa1b),
                 "prompts_per_image": 3},
        "optim": {"lr": 2e-3, "warmup_steps": 1},
    }
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


def run_two_ranks(worker_source: str, config: dict, tmp_path: Path) -> tuple[dict, dict]:
    """Writes `config` as YAML and `worker_source` as a script, runs the script under
    torchrun with 2 processes (gloo, one thread each) as `worker.py CONFIG OUT_DIR`, and
    returns the two state dicts it saved as OUT_DIR/rank0.pt and rank1.pt."""
    config_path, worker = tmp_path / "ddp.yaml", tmp_path / "worker.py"
    config_path.write_text(yaml.safe_dump(config))
    worker.write_text(worker_source)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(worker), str(config_path), str(tmp_path)], check=True, env=env, timeout=240, capture_output=True)
    return torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
