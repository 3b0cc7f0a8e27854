"""SAN from files: tapkit's own safetensors (the SanConfig in the metadata, tensors in
tapkit's naming) or a released SAN checkpoint (official naming, architecture read off
the tensors; see keys.py), and from a preset."""

from __future__ import annotations

import torch

from tapkit.checkpoint.io import Checkpoint, CheckpointError, load_checked
from tapkit.models.san.config import PRESETS, SanConfig
from tapkit.models.san.keys import config_from_released, is_released_san, tapkit_state_from_released
from tapkit.models.san.model import SanModel

TAPKIT_MARKERS = ("side.query_embed", "mask_decoder.bias_scaling.weight", "background.bg_embed")


def is_tapkit_san(keys) -> bool:
    return all(k in keys for k in TAPKIT_MARKERS)


def recognizes(checkpoint: Checkpoint) -> bool:
    return is_tapkit_san(checkpoint.tensors) or is_released_san(checkpoint.tensors)


def san_from_checkpoint(checkpoint: Checkpoint) -> SanModel:
    tensors = checkpoint.tensors
    if is_released_san(tensors):
        cfg = config_from_released(tensors)
        tensors = tapkit_state_from_released(tensors)
    elif checkpoint.config and "side" in checkpoint.config:
        cfg = SanConfig.from_dict(checkpoint.config)
    else:
        raise CheckpointError(f"{checkpoint.path}: a tapkit SAN checkpoint must record its SanConfig in its metadata")
    with torch.device("meta"):
        expected = SanModel(cfg).state_dict()
    model = SanModel(cfg)
    load_checked(model, expected, tensors, checkpoint.path, "SAN")
    return model.eval()


def san_from_preset(preset: str) -> SanModel:
    return SanModel(PRESETS[preset])
