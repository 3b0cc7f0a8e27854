"""Recognising and building SCA models."""

from __future__ import annotations

from tapkit.checkpoint.io import Checkpoint
from tapkit.models.sca.keys import is_released_sca, is_tapkit_sca


def is_sca_checkpoint(checkpoint: Checkpoint) -> bool:
    return is_tapkit_sca(checkpoint.tensors) or is_released_sca(checkpoint.tensors, checkpoint.config)
