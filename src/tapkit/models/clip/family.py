"""CLIP as a registered family: OpenAI / open_clip tensor names or transformers'
CLIPModel naming. `tapkit.load_model` gives the bare ClipModel; `tapkit.load_clip`
gives it with its tokenizer and preprocessing."""

from __future__ import annotations

from torch import nn

from tapkit.checkpoint.io import Checkpoint
from tapkit.errors import UserError
from tapkit.models.clip.build import clip_from_checkpoint, is_clip_state
from tapkit.models.family import Companions, Family, refuse_companions


def recognizes(checkpoint: Checkpoint) -> bool:
    return is_clip_state(checkpoint.tensors)


def build(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    refuse_companions("CLIP", companions)  # its tokenizer comes with tapkit.load_clip
    return clip_from_checkpoint(checkpoint)


def build_preset(preset: str, companions: Companions) -> nn.Module:
    raise UserError("CLIP models are loaded from weights (tapkit.load_clip), not built from a preset")


FAMILY = Family("clip", (), recognizes, build, build_preset)
