"""What a model family tells the registry: its name and presets, how it recognises its
checkpoints by their contents (names of tensors, or the config they record - never a
flag), and how it builds a model from a checkpoint or a preset.

Nothing here assumes prompts: a promptable family (TAP, SAM, SCA) and an
open-vocabulary segmenter (image + class names -> label map) register the same way;
what the built model can do is its own interface's business (`models/interface.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from tapkit.checkpoint.io import Checkpoint
from tapkit.errors import UserError


@dataclass(frozen=True)
class Companions:
    """What the user gave next to the weights: a tokenizer and a concept vocabulary
    (paths or loaded objects, or None), and a preset that asserts the architecture."""

    tokenizer: object | None = None
    concepts: object | None = None
    preset: str | None = None


@dataclass(frozen=True)
class Family:
    name: str
    presets: tuple[str, ...]
    recognizes: Callable[[Checkpoint], bool]
    build: Callable[[Checkpoint, Companions], nn.Module]
    build_preset: Callable[[str, Companions], nn.Module]


def refuse_companions(family: str, companions: Companions) -> None:
    """One clear line when a family without a captioner or concept head is given one."""
    if companions.tokenizer is not None:
        raise UserError(f"a {family} checkpoint has no captioner: it takes no tokenizer")
    if companions.concepts is not None:
        raise UserError(f"a {family} checkpoint has no concept head: it takes no concept file")
