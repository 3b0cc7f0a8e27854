"""Loading CLIP weights of the three layouts users have, never executing code:

- an open_clip hub directory: open_clip_config.json + open_clip_model.safetensors (or
  open_clip_pytorch_model.bin, read with weights_only), usually with the tokenizer;
- a transformers `CLIPModel` directory: config.json + model.safetensors / pytorch_model.bin
  (+ vocab.json, merges.txt);
- a bare OpenAI-format state dict (.pt, .bin, .safetensors), its architecture read off
  the tensors (or off tapkit's metadata), the tokenizer from `tokenizer=`.

OpenAI's original .pt files are TorchScript archives (they hold code): they are refused
with the one command that converts them."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import torch

from tapkit.checkpoint.hf_dir import HF_CONFIG_KEY, is_hf_directory, load_hf_directory
from tapkit.checkpoint.io import Checkpoint, CheckpointError, load_checked, load_checkpoint
from tapkit.errors import UserError
from tapkit.models.clip.config import ClipConfig, from_open_clip, from_state_dict, from_transformers
from tapkit.models.clip.hf_naming import hf_to_openai, is_hf_clip_state
from tapkit.models.clip.model import ClipModel
from tapkit.models.clip.tokenizer import MERGES_FILE, VOCAB_FILE, ClipTokenizer

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPEN_CLIP_KEY = "open_clip_config"
# Entries of OpenAI's state dicts that are not weights (ints saved as tensors).
NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")
CONVERT_HINT = (
    "python -c \"import torch; torch.save(torch.jit.load('{path}', map_location='cpu').state_dict(), 'clip_state_dict.pt')\""
)


def is_clip_state(keys) -> bool:
    """OpenAI/open_clip naming (both towers) or transformers' CLIPModel naming."""
    keys = set(keys)
    return ("visual.conv1.weight" in keys and "token_embedding.weight" in keys) or is_hf_clip_state(keys)


def is_open_clip_directory(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / OPEN_CLIP_CONFIG).is_file() and any((path / n).is_file() for n in OPEN_CLIP_WEIGHTS)


def _refuse_torchscript(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        raise CheckpointError(
            f"{path} is a TorchScript archive (OpenAI's original CLIP .pt holds code, which tapkit never runs); "
            f"convert it once, trusting the file, with: {CONVERT_HINT.format(path=path)}"
        )


def read_clip_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The tensors and recorded config of any of the three layouts."""
    path = Path(path)
    if path.is_dir():
        if is_open_clip_directory(path):
            try:
                config = json.loads((path / OPEN_CLIP_CONFIG).read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise CheckpointError(f"cannot read {path / OPEN_CLIP_CONFIG}: {err}") from None
            weights = next(path / n for n in OPEN_CLIP_WEIGHTS if (path / n).is_file())
            return Checkpoint(load_checkpoint(weights).tensors, {OPEN_CLIP_KEY: config}, path)
        if is_hf_directory(path):
            return load_hf_directory(path)
        raise CheckpointError(f"{path} is neither an open_clip directory ({OPEN_CLIP_CONFIG} + "
                              f"{' or '.join(OPEN_CLIP_WEIGHTS)}) nor a transformers one (config.json + model.safetensors)")
    if path.is_file():
        _refuse_torchscript(path)
    return load_checkpoint(path)


def clip_config(checkpoint: Checkpoint, tensors: dict[str, torch.Tensor], quick_gelu: bool | None = None) -> ClipConfig:
    """The architecture as the checkpoint records it, else read off the (OpenAI-named) tensors."""
    recorded = checkpoint.config or {}
    if OPEN_CLIP_KEY in recorded:
        cfg = from_open_clip(recorded[OPEN_CLIP_KEY])
    elif HF_CONFIG_KEY in recorded:
        cfg = from_transformers(recorded[HF_CONFIG_KEY])
    elif "model_cfg" in recorded:  # tapkit's own .safetensors: the open_clip layout in the metadata
        cfg = from_open_clip(recorded)
    else:
        cfg = from_state_dict(tensors)
    if quick_gelu is not None and quick_gelu != cfg.quick_gelu:
        cfg = ClipConfig(cfg.embed_dim, cfg.vision, cfg.text, quick_gelu, cfg.preprocess)
    return cfg


def openai_tensors(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights in OpenAI naming ('module.' of DDP saves dropped)."""
    tensors = {k.removeprefix("module."): v for k, v in checkpoint.tensors.items()}
    if is_hf_clip_state(tensors):
        tensors = hf_to_openai(tensors)
    return {k: v for k, v in tensors.items() if k not in NON_WEIGHTS}


def clip_from_checkpoint(checkpoint: Checkpoint, quick_gelu: bool | None = None) -> ClipModel:
    if not is_clip_state(checkpoint.tensors):
        raise CheckpointError(f"{checkpoint.path} is not a CLIP checkpoint (no visual.conv1 / token_embedding weights)")
    tensors = openai_tensors(checkpoint)
    model = ClipModel(clip_config(checkpoint, tensors, quick_gelu))
    load_checked(model, model.state_dict(), tensors, checkpoint.path, "CLIP")
    return model.eval()


def clip_tokenizer(checkpoint_path: str | os.PathLike, tokenizer, context_length: int) -> ClipTokenizer:
    """`tokenizer` (a ClipTokenizer or a folder with vocab.json + merges.txt), else the
    checkpoint directory's own files."""
    if isinstance(tokenizer, ClipTokenizer):
        return tokenizer
    if tokenizer is not None:
        return ClipTokenizer.from_dir(tokenizer, context_length)
    folder = Path(checkpoint_path)
    if folder.is_dir() and (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
        return ClipTokenizer.from_dir(folder, context_length)
    if folder.is_dir() and (folder / "tokenizer.json").is_file():
        return ClipTokenizer.from_tokenizer_json(folder / "tokenizer.json", context_length)
    raise UserError(f"{checkpoint_path} has no CLIP tokenizer next to it: pass tokenizer= a folder with "
                    f"{VOCAB_FILE} and {MERGES_FILE} (OpenAI's, for OpenAI and open_clip weights)")
