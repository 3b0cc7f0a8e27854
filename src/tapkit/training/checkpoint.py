"""Training checkpoints: model, optimizer, step and every rank's RNG state, written
atomically (a crash mid-write leaves the previous checkpoint intact)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tapkit.errors import UserError
from tapkit.utils.atomic import write_with

CHECKPOINT_NAME = "checkpoint.pt"
# Config keys a resumed run may change freely: they say how often to log and save and
# where to run, not what is trained.
FREE_ON_RESUME = ("log_every", "ckpt_every", "device", "data.num_workers", "cache_embeddings")


@dataclass
class TrainState:
    step: int
    model: dict
    optimizer: dict
    rng: list  # per rank: {"cpu": ByteTensor, "cuda": ByteTensor | None}
    config: dict
    tap_config: dict


def rng_state() -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_train_state(state: TrainState, out_dir: str | os.PathLike) -> Path:
    path = Path(out_dir) / CHECKPOINT_NAME
    payload = {"step": state.step, "model": state.model, "optimizer": state.optimizer, "rng": state.rng,
               "config": state.config, "tap_config": state.tap_config}
    write_with(path, lambda tmp: torch.save(payload, tmp))
    return path


def load_train_state(out_dir: str | os.PathLike) -> TrainState | None:
    path = Path(out_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"cannot resume: corrupt training checkpoint {path}: {err}") from None
    return TrainState(data["step"], data["model"], data["optimizer"], data["rng"], data["config"], data["tap_config"])


def _flat(data, prefix: str = "") -> dict:
    """{'optim': {'lr': 1e-3}} -> {'optim.lr': 1e-3}; sequences as lists (JSON's view)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.loads(json.dumps(data))}


def config_changes(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """'key: old -> new' for each dotted key whose value differs."""
    a, b = _flat(old), _flat(new)
    return [f"{key}: {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b))
            if key not in ignore and a.get(key) != b.get(key)]


def check_resume(state: TrainState, config: dict, architecture: dict, allow_config_change: bool, out_dir) -> None:
    """Refuses, in one line, to resume a checkpoint with another architecture (its weights
    cannot go into this model) or, unless `allow_config_change`, with another config
    (a changed learning rate or batch size would otherwise be taken silently)."""
    arch = config_changes(state.tap_config, architecture)
    if arch:
        raise UserError(f"cannot resume {out_dir}: its checkpoint has another architecture ({'; '.join(arch[:3])}); "
                        "train into a new out_dir")
    changes = config_changes(state.config, config, FREE_ON_RESUME)
    if changes and not allow_config_change:
        raise UserError(f"cannot resume {out_dir}: the config differs from its checkpoint's ({'; '.join(changes[:4])}); "
                        "run with the same config, a new out_dir, or --allow-config-change")
    if changes:
        print(f"resuming with a changed config: {'; '.join(changes)}", file=sys.stderr)
