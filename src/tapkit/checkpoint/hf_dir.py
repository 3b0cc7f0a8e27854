"""Reading a model directory as Hugging Face saves one: config.json plus weights in
model.safetensors or pytorch_model.bin, possibly sharded with an index file. Torch
files load with weights_only=True; nothing in the directory is executed."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tapkit.checkpoint.io import Checkpoint, CheckpointError, load_checkpoint

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_CONFIG_KEY = "hf_config"


def is_hf_directory(path: str | os.PathLike) -> bool:
    path = Path(path)
    names = WEIGHT_FILES + INDEX_FILES
    return (path / "config.json").is_file() and any((path / n).is_file() for n in names)


def _weight_files(path: Path) -> list[Path]:
    for name in INDEX_FILES:
        index = path / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise CheckpointError(f"corrupt weight index {index}: {err}") from None
            return [path / f for f in sorted(set(weight_map.values()))]
    return [path / n for n in WEIGHT_FILES if (path / n).is_file()][:1]


def load_hf_directory(path: str | os.PathLike) -> Checkpoint:
    """All tensors of the directory's weight files, with config.json as
    `config["hf_config"]`."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path / 'config.json'}: {err}") from None
    tensors = {}
    for file in _weight_files(path):
        if not file.is_file():
            raise CheckpointError(f"{path}: weight shard {file.name} is missing")
        tensors.update(load_checkpoint(file).tensors)
    return Checkpoint(tensors, {HF_CONFIG_KEY: config}, path)
