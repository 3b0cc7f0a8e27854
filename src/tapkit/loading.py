"""`load_model` / `build_model`: the one entry point that turns files into a ready model."""

from __future__ import annotations

import os

import torch

from tapkit.checkpoint.io import load_checkpoint
from tapkit.errors import UserError
from tapkit.models.tap.build import check_companions, preset_config, tap_from_checkpoint
from tapkit.models.tap.concepts import ConceptVocabulary
from tapkit.models.tap.model import TapModel
from tapkit.models.tap.tokenizer import TextTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    return device


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; choose from {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _companions(tokenizer, concepts):
    tok = tokenizer if tokenizer is None or isinstance(tokenizer, TextTokenizer) else TextTokenizer(tokenizer)
    voc = concepts if concepts is None or isinstance(concepts, ConceptVocabulary) else ConceptVocabulary.load(concepts)
    return tok, voc


def load_model(
    checkpoint: str | os.PathLike,
    tokenizer: str | os.PathLike | TextTokenizer | None = None,
    concepts: str | os.PathLike | ConceptVocabulary | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "float32",
    preset: str | None = None,
) -> TapModel:
    """Loads a TAP checkpoint (.pkl, .safetensors or torch file). The architecture is
    read off the weights unless `preset` (tap_vit_b / tap_vit_l / tap_vit_h) names it.
    Without a tokenizer the model gives no captions; without concepts, no names."""
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    tok, voc = _companions(tokenizer, concepts)
    model = tap_from_checkpoint(load_checkpoint(checkpoint), tok, voc, preset)
    return model.to(device=dev, dtype=dt)


def build_model(
    preset: str,
    tokenizer: str | os.PathLike | TextTokenizer | None = None,
    concepts: str | os.PathLike | ConceptVocabulary | None = None,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype = "float32",
) -> TapModel:
    """A randomly initialized model of a named preset (for training and benchmarks)."""
    cfg = preset_config(preset)
    tok, voc = _companions(tokenizer, concepts)
    check_companions(cfg, tok, voc)
    return TapModel(cfg, tok, voc).eval().to(device=resolve_device(device), dtype=resolve_dtype(dtype))
