"""Training checkpoints: model, optimizer, step and every rank's RNG state, written
atomically (a crash mid-write leaves the previous checkpoint intact)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tapkit.errors import UserError
from tapkit.utils.atomic import write_with

CHECKPOINT_NAME = "checkpoint.pt"


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
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"cannot resume: corrupt training checkpoint {path}: {err}") from None
    return TrainState(data["step"], data["model"], data["optimizer"], data["rng"], data["config"], data["tap_config"])
