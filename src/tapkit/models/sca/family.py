"""SCA as a registered family: a tapkit SCA checkpoint or a released one."""

from __future__ import annotations

from torch import nn

from tapkit.checkpoint.io import Checkpoint
from tapkit.errors import UserError
from tapkit.models.family import Companions, Family
from tapkit.models.sca.build import is_sca_checkpoint, sca_from_checkpoint


def build(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    if companions.concepts is not None:
        raise UserError("an SCA checkpoint has no concept head: it takes no concept file")
    return sca_from_checkpoint(checkpoint, companions.tokenizer)


def build_preset(preset: str, companions: Companions) -> nn.Module:
    raise UserError("SCA models are built from a backbone and a language model (tapkit.models.sca.build_sca), not from a preset")


FAMILY = Family("sca", (), is_sca_checkpoint, build, build_preset)
