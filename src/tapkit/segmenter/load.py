"""`load_segmenter`: files -> a ready `Segmenter` (the model through the registry, its
CLIP tokenizer from the folder or from `tokenizer`)."""

from __future__ import annotations

import os

import torch

from tapkit.defaults import default_san_dir
from tapkit.errors import UserError
from tapkit.loading import resolve_dtype
from tapkit.models.clip.build import clip_tokenizer
from tapkit.models.families import Companions, build_from_checkpoint, read_checkpoint
from tapkit.models.san.model import SanModel
from tapkit.runtime import resolve_device
from tapkit.segmenter.segmenter import Segmenter


def load_segmenter(
    path: str | os.PathLike | None = None,
    tokenizer=None,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype = "float32",
    input_size: int | None = None,
) -> Segmenter:
    """An open-vocabulary semantic segmenter: image + class names -> label map.

    `path`: a tapkit SAN .safetensors or a released SAN .pth (san_vit_b_16.pth,
    san_vit_large_14.pth; `tokenizer` then names a folder with OpenAI's vocab.json +
    merges.txt), or a folder holding `model.safetensors` and its tokenizer; None loads
    the packaged SAN trained on the synthetic world. `input_size`: the short side the
    image is resized to (default: the side network's training size)."""
    path = default_san_dir() if path is None else path
    weights = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    model = build_from_checkpoint(read_checkpoint(weights), Companions())
    if not isinstance(model, SanModel):
        raise UserError(f"{weights} is a {model.family.upper()} checkpoint, not an open-vocabulary segmenter (SAN)")
    tok = clip_tokenizer(folder, tokenizer, model.clip.context_length)
    model = model.to(device=resolve_device(device), dtype=resolve_dtype(dtype))
    return Segmenter(model, tok, input_size)
