"""Writing a CLIP as an open_clip hub folder (open_clip_config.json +
open_clip_model.safetensors + vocab.json + merges.txt), the layout tapkit packages
its own CLIP in and open_clip itself reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from tapkit.checkpoint.io import save_safetensors
from tapkit.models.clip.build import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS
from tapkit.models.clip.model import ClipModel
from tapkit.models.clip.tokenizer import ClipTokenizer
from tapkit.utils.atomic import write_text_atomic


def save_open_clip_folder(model: ClipModel, tokenizer: ClipTokenizer, folder: str | os.PathLike,
                          dtype: torch.dtype | None = None) -> Path:
    """`dtype` (e.g. torch.float16) stores the weights smaller; loading casts them back."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    save_safetensors(state, folder / OPEN_CLIP_WEIGHTS[0])
    write_text_atomic(folder / OPEN_CLIP_CONFIG, json.dumps(model.cfg.to_dict(), indent=2) + "\n")
    tokenizer.save(folder)
    return folder
