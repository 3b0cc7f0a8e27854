"""Building SAM models: from a named preset (random weights) or from a checkpoint
(official .pth, a tapkit .safetensors, or transformers' SamModel naming), whose
architecture is read off its tensors."""

from __future__ import annotations

import dataclasses
from typing import Collection, Mapping

import torch

from tapkit.checkpoint.io import Checkpoint, load_checked
from tapkit.models.sam.config import PRESETS, SamArchitectureError, SamConfig, infer_sam_config
from tapkit.models.sam.hf_naming import sam_state_from_hf
from tapkit.models.sam.model import DERIVED_KEYS, SamModel

OFFICIAL_MARKERS = ("image_encoder.neck.0.weight", "mask_decoder.iou_token.weight")
HF_MARKERS = ("vision_encoder.neck.conv1.weight", "mask_decoder.iou_token.weight")
# Eps of the decoder's block LayerNorms in transformers' port (the official code uses 1e-5).
HF_DECODER_NORM_EPS = 1e-6


def is_sam_state(keys: Collection[str]) -> bool:
    """Official SAM naming (and no TAP image decoder)."""
    return all(k in keys for k in OFFICIAL_MARKERS) and not any(k.startswith("image_decoder.") for k in keys)


def is_hf_sam_state(keys: Collection[str]) -> bool:
    """transformers' SamModel naming, without SCA's caption mixer."""
    return all(k in keys for k in HF_MARKERS) and not any(".additional_transformer." in k for k in keys)


def sam_preset(name: str) -> SamConfig:
    if name not in PRESETS:
        raise SamArchitectureError(f"unknown SAM preset '{name}'; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def load_sam_tensors(model: SamModel, tensors: Mapping[str, torch.Tensor], source: str) -> SamModel:
    """Loads official-naming tensors into `model`, checking names and shapes first."""
    tensors = {k: v for k, v in tensors.items() if k not in DERIVED_KEYS}
    load_checked(model, model.learned_state_dict(), tensors, source, "SAM")
    return model.eval()


def sam_config_for(tensors: Mapping[str, torch.Tensor], config: dict | None, preset: str | None) -> SamConfig:
    if preset is not None:
        return sam_preset(preset)
    if config is not None and config.get("family") == "sam":
        return SamConfig.from_dict(config)
    return infer_sam_config({k: tuple(v.shape) for k, v in tensors.items()})


def sam_from_checkpoint(checkpoint: Checkpoint, preset: str | None = None) -> SamModel:
    """A SAM from official-naming or transformers-naming weights."""
    tensors = checkpoint.tensors
    decoder_eps = None
    if is_hf_sam_state(tensors):
        tensors = sam_state_from_hf(tensors)
        decoder_eps = HF_DECODER_NORM_EPS
    cfg = sam_config_for(tensors, checkpoint.config, preset)
    if decoder_eps is not None:
        cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, norm_eps=decoder_eps))
    return load_sam_tensors(SamModel(cfg), tensors, str(checkpoint.path))
