"""SAN as a registered family: tapkit's SAN safetensors or a released SAN .pth,
recognised by their tensors. `tapkit.load_model` gives the bare SanModel;
`tapkit.load_segmenter` gives it with its tokenizer, preprocessing and vocabulary."""

from __future__ import annotations

from torch import nn

from tapkit.checkpoint.io import Checkpoint
from tapkit.models.family import Companions, Family, refuse_companions
from tapkit.models.san.build import recognizes, san_from_checkpoint, san_from_preset
from tapkit.models.san.config import PRESETS


def build(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    refuse_companions("SAN", companions)  # its tokenizer comes with tapkit.load_segmenter
    return san_from_checkpoint(checkpoint)


def build_preset(preset: str, companions: Companions) -> nn.Module:
    refuse_companions("SAN", companions)
    return san_from_preset(preset)


FAMILY = Family("san", tuple(PRESETS), recognizes, build, build_preset)
