"""SAM as a registered family: the official checkpoints' tensors or transformers' naming."""

from __future__ import annotations

from torch import nn

from tapkit.checkpoint.io import Checkpoint
from tapkit.models.family import Companions, Family, refuse_companions
from tapkit.models.sam.build import is_hf_sam_state, is_sam_state, sam_from_checkpoint, sam_preset
from tapkit.models.sam.model import SamModel


def recognizes(checkpoint: Checkpoint) -> bool:
    keys = set(checkpoint.tensors)
    return is_sam_state(keys) or is_hf_sam_state(keys)


def build(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    refuse_companions("SAM", companions)
    return sam_from_checkpoint(checkpoint, companions.preset)


def build_preset(preset: str, companions: Companions) -> nn.Module:
    refuse_companions("SAM", companions)
    return SamModel(sam_preset(preset)).eval()


FAMILY = Family("sam", ("sam_vit_b", "sam_vit_l", "sam_vit_h"), recognizes, build, build_preset)
