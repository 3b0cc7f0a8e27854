"""The registry: the model families tapkit knows, and which one a checkpoint or a
preset belongs to. Each family describes itself in its own package (`<family>/family.py`,
a `Family`); joining the registry is one line here.

The first family that recognises a checkpoint builds it; the order matters only where
one family's checkpoints contain another's (an SCA holds a SAM or a TAP)."""

from __future__ import annotations

import os

from torch import nn

from tapkit.checkpoint.hf_dir import is_hf_directory, load_hf_directory
from tapkit.checkpoint.io import Checkpoint, CheckpointError, load_checkpoint
from tapkit.errors import UserError
from tapkit.models.clip.build import is_open_clip_directory, read_clip_checkpoint
from tapkit.models.clip.family import FAMILY as CLIP
from tapkit.models.family import Companions, Family
from tapkit.models.sam.family import FAMILY as SAM
from tapkit.models.san.family import FAMILY as SAN
from tapkit.models.sca.family import FAMILY as SCA
from tapkit.models.tap.family import FAMILY as TAP

__all__ = ["ALL_PRESETS", "FAMILIES", "Companions", "Family", "build_from_checkpoint", "family_of_checkpoint", "family_of_preset", "read_checkpoint"]

FAMILIES: tuple[Family, ...] = (SCA, TAP, SAM, SAN, CLIP)

ALL_PRESETS: tuple[str, ...] = tuple(p for f in FAMILIES for p in f.presets)


def family_of_checkpoint(checkpoint: Checkpoint) -> Family:
    for family in FAMILIES:
        if family.recognizes(checkpoint):
            return family
    raise CheckpointError(
        f"{checkpoint.path} is not a checkpoint of a known model family "
        f"({', '.join(f.name.upper() for f in FAMILIES)}): none of their tensors were found"
    )


def family_of_preset(preset: str) -> Family:
    for family in FAMILIES:
        if preset in family.presets:
            return family
    raise UserError(f"unknown preset '{preset}'; choose from {', '.join(ALL_PRESETS)}")


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """A weights file, or a directory as Hugging Face or open_clip save models (config + weights)."""
    if os.path.isdir(path) and is_open_clip_directory(path):
        return read_clip_checkpoint(path)
    if os.path.isdir(path) and is_hf_directory(path):
        return load_hf_directory(path)
    return load_checkpoint(path)


def build_from_checkpoint(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    family = family_of_checkpoint(checkpoint)
    if companions.preset is not None and companions.preset not in family.presets:
        raise UserError(
            f"--preset {companions.preset} does not fit this {family.name.upper()} checkpoint"
            + (f" (its presets: {', '.join(family.presets)})" if family.presets else "")
        )
    return family.build(checkpoint, companions)
