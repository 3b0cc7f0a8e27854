"""Loading and saving TAP weights: official .pkl (restricted unpickler),
.safetensors (with the architecture in the metadata) and torch files
(weights_only). The format is recognised from the file's content."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from tapkit.checkpoint.safe_pickle import UnsafePickleError, safe_load_pickle
from tapkit.errors import UserError
from tapkit.utils.atomic import write_with

CONFIG_KEY = "tapkit_config"
# Automatic-mode settings the model was measured with (EverythingConfig field -> value).
EVERYTHING_KEY = "tapkit_everything"


class CheckpointError(UserError):
    """The checkpoint file cannot be read as model weights."""


@dataclass
class Checkpoint:
    """Tensors by name, the architecture when the file records it, and the automatic-mode
    settings the file ships (`everything`, EverythingConfig field -> value; {} if none)."""

    tensors: dict[str, torch.Tensor]
    config: dict | None
    path: Path
    everything: dict = field(default_factory=dict)

    def float_dtype(self) -> torch.dtype:
        """The floating dtype most of the weights are stored in (float32 if none)."""
        counts: dict[torch.dtype, int] = {}
        for value in self.tensors.values():
            if value.is_floating_point():
                counts[value.dtype] = counts.get(value.dtype, 0) + value.numel()
        return max(counts, key=counts.get) if counts else torch.float32


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK":
        return "torch"
    # safetensors first: its 8-byte header length may well start with the byte 0x80.
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    raise CheckpointError(f"unrecognised checkpoint format: {path} (expected .pkl, .safetensors or a torch file)")


def _to_tensors(state: Mapping, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"not a weights file (expected a mapping of names to arrays): {path}")
    tensors = {}
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            ready = value.flags.c_contiguous and value.flags.writeable
            value = torch.from_numpy(value if ready else value.copy())
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"not a weights file: entry {name!r} is not an array: {path}")
        tensors[name] = value
    return tensors


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    kind = _sniff(path)
    config, everything = None, {}
    try:
        if kind == "pickle":
            state = safe_load_pickle(path)
        elif kind == "torch":
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
                config = state.get(CONFIG_KEY)
                state = state["model"]
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
            if CONFIG_KEY in metadata:
                config = json.loads(metadata[CONFIG_KEY])
            if EVERYTHING_KEY in metadata:
                everything = json.loads(metadata[EVERYTHING_KEY])
                if not isinstance(everything, dict):
                    raise ValueError(f"{EVERYTHING_KEY} is not a mapping")
    except UnsafePickleError as err:
        raise CheckpointError(f"refusing {path}: {err}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as err:
        raise CheckpointError(f"corrupt checkpoint {path}: {err}") from None
    return Checkpoint(_to_tensors(state, path), config, path, everything)


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, config: dict | None = None,
                     everything: Mapping | None = None) -> None:
    """Writes the tensors (contiguous, CPU) atomically, with the architecture and any
    automatic-mode settings (`everything`) in the metadata."""
    from safetensors.torch import save_file

    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {CONFIG_KEY: json.dumps(config)} if config is not None else {}
    if everything:
        metadata[EVERYTHING_KEY] = json.dumps(dict(everything))
    metadata = metadata or None
    write_with(path, lambda tmp: save_file(data, str(tmp), metadata=metadata))


def load_checked(model: torch.nn.Module, expected: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], source, family: str) -> None:
    """Loads `tensors` into `model` after checking that their names and shapes are exactly
    `expected` (the model's learned tensors), with a one-line error naming the first misfit."""
    check_fit(expected, tensors, source, family)
    # Derived buffers (batch-norm counters, ...) are not in `expected`; the rest was checked.
    model.load_state_dict(dict(tensors), strict=False)


def check_fit(expected: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], source, family: str) -> None:
    """A one-line `CheckpointError` naming the first tensor whose name or shape is not
    `expected`'s (which may be meta tensors: only shapes are read)."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{source} does not match the {family} architecture ({detail})")
    for name, value in tensors.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(value.shape)}, "
                f"the architecture needs {tuple(expected[name].shape)}"
            )
