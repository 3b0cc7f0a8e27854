"""`load_model` / `build_model`: the one entry point that turns files into a ready model
of any family (TAP, SAM, SCA), recognised by the checkpoint's contents; `load_clip` for
CLIP (a model with its tokenizer and preprocessing)."""

from __future__ import annotations

import os

import torch
from torch import nn

from tapkit.defaults import default_model_files
from tapkit.errors import UserError
from tapkit.models.interface import PromptableModel
from tapkit.runtime import resolve_device
from tapkit.models.families import Companions, build_from_checkpoint, family_of_preset, read_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; choose from {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    checkpoint: str | os.PathLike | None = None,
    tokenizer=None,
    concepts=None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = "float32",
    preset: str | None = None,
) -> nn.Module:
    """Loads a checkpoint of any family and returns its model, ready for `Predictor`.

    TAP: official .pkl, .safetensors or torch file; `tokenizer` (SentencePiece) gives
    captions, `concepts` gives names. SAM: the official sam_vit_{b,l,h} .pth (or
    transformers' SamModel weights); no tokenizer, no concepts. SCA: a tapkit SCA
    .safetensors or a released segment-caption-anything directory; `tokenizer` is
    optional when the checkpoint names or contains one. The architecture is read off
    the weights unless `preset` (e.g. tap_vit_b, sam_vit_h) asserts it.

    With no checkpoint: the small default model packaged with tapkit, with its tokenizer
    and concept file unless others are given (what `tapkit predict` uses without
    `--checkpoint`)."""
    if checkpoint is None:
        files = default_model_files()
        checkpoint, tokenizer, concepts = files.checkpoint, tokenizer or files.tokenizer, concepts or files.concepts
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    ckpt = read_checkpoint(checkpoint)
    model = build_from_checkpoint(ckpt, Companions(tokenizer, concepts, preset))
    if isinstance(model, PromptableModel):  # CLIP has no automatic mode
        model.everything_defaults = dict(ckpt.everything)
    return model.to(device=dev, dtype=dt)


def build_model(
    preset: str,
    tokenizer=None,
    concepts=None,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype = "float32",
) -> nn.Module:
    """A randomly initialized model of a named preset (for training and benchmarks)."""
    model = family_of_preset(preset).build_preset(preset, Companions(tokenizer, concepts, preset))
    return model.to(device=resolve_device(device), dtype=resolve_dtype(dtype))


def load_clip(
    path: str | os.PathLike | None = None,
    tokenizer=None,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype = "float32",
    quick_gelu: bool | None = None,
):
    """A CLIP ready to embed text and images (`tapkit.models.clip.encoder.Clip`).

    `path`: an open_clip hub folder, a transformers CLIPModel folder, or a bare
    OpenAI-format state dict (.pt, .bin, .safetensors; then `tokenizer` names a folder
    with vocab.json + merges.txt); None loads the packaged CLIP trained on the synthetic
    world. `quick_gelu` overrides the activation where the file cannot say (a bare state
    dict is taken to be OpenAI's, with QuickGELU)."""
    from tapkit.defaults import default_clip_dir
    from tapkit.models.clip.build import clip_from_checkpoint, clip_tokenizer, read_clip_checkpoint
    from tapkit.models.clip.encoder import Clip

    path = default_clip_dir() if path is None else path
    model = clip_from_checkpoint(read_clip_checkpoint(path), quick_gelu)
    tok = clip_tokenizer(path, tokenizer, model.context_length)
    if tok.vocab_size > model.cfg.text.vocab_size:
        raise UserError(f"the tokenizer has {tok.vocab_size} ids but the CLIP text tower only {model.cfg.text.vocab_size}")
    return Clip(model.to(device=resolve_device(device), dtype=resolve_dtype(dtype)), tok)
