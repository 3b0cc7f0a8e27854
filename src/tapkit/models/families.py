"""The model families tapkit knows, and how a checkpoint is recognised as one of them
by its contents (names of its tensors, or the config it records) - never by a flag.

Each family builds its model from a `Checkpoint` (tensors + recorded config) and the
user's companion files. The first family that recognises a checkpoint builds it; the
order matters only where one family's checkpoints contain another's (an SCA holds a SAM)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from torch import nn

from tapkit.checkpoint.io import Checkpoint, CheckpointError
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


def _keys(checkpoint: Checkpoint) -> set[str]:
    return set(checkpoint.tensors)


def _no_companions(family: str, companions: Companions) -> None:
    if companions.tokenizer is not None:
        raise UserError(f"a {family} checkpoint has no captioner: it takes no tokenizer")
    if companions.concepts is not None:
        raise UserError(f"a {family} checkpoint has no concept head: it takes no concept file")


# TAP -------------------------------------------------------------------------


def _tap_recognizes(checkpoint: Checkpoint) -> bool:
    return any(k.startswith("image_decoder.") for k in checkpoint.tensors)


def _tap_companions(companions: Companions):
    from tapkit.models.tap.concepts import ConceptVocabulary
    from tapkit.models.tap.tokenizer import TextTokenizer

    tok, voc = companions.tokenizer, companions.concepts
    tok = tok if tok is None or isinstance(tok, TextTokenizer) else TextTokenizer(tok)
    voc = voc if voc is None or isinstance(voc, ConceptVocabulary) else ConceptVocabulary.load(voc)
    return tok, voc


def _tap_build(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    from tapkit.models.tap.build import tap_from_checkpoint

    tok, voc = _tap_companions(companions)
    return tap_from_checkpoint(checkpoint, tok, voc, companions.preset)


def _tap_build_preset(preset: str, companions: Companions) -> nn.Module:
    from tapkit.models.tap.build import check_companions, preset_config
    from tapkit.models.tap.model import TapModel

    cfg = preset_config(preset)
    tok, voc = _tap_companions(companions)
    check_companions(cfg, tok, voc)
    return TapModel(cfg, tok, voc).eval()


# SAM -------------------------------------------------------------------------


def _sam_recognizes(checkpoint: Checkpoint) -> bool:
    from tapkit.models.sam.build import is_hf_sam_state, is_sam_state

    keys = _keys(checkpoint)
    return is_sam_state(keys) or is_hf_sam_state(keys)


def _sam_build(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    from tapkit.models.sam.build import sam_from_checkpoint

    _no_companions("SAM", companions)
    return sam_from_checkpoint(checkpoint, companions.preset)


def _sam_build_preset(preset: str, companions: Companions) -> nn.Module:
    from tapkit.models.sam.build import sam_preset
    from tapkit.models.sam.model import SamModel

    _no_companions("SAM", companions)
    return SamModel(sam_preset(preset)).eval()


# SCA -------------------------------------------------------------------------


def _sca_recognizes(checkpoint: Checkpoint) -> bool:
    from tapkit.models.sca.build import is_sca_checkpoint

    return is_sca_checkpoint(checkpoint)


def _sca_build(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    from tapkit.models.sca.build import sca_from_checkpoint

    if companions.concepts is not None:
        raise UserError("an SCA checkpoint has no concept head: it takes no concept file")
    return sca_from_checkpoint(checkpoint, companions.tokenizer)


def _sca_build_preset(preset: str, companions: Companions) -> nn.Module:
    raise UserError("SCA models are built from a backbone and a language model (tapkit.models.sca.build_sca), not from a preset")


# CLIP ------------------------------------------------------------------------


def _clip_recognizes(checkpoint: Checkpoint) -> bool:
    from tapkit.models.clip.build import is_clip_state

    return is_clip_state(checkpoint.tensors)


def _clip_build(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    from tapkit.models.clip.build import clip_from_checkpoint

    _no_companions("CLIP", companions)  # its tokenizer comes with tapkit.load_clip
    return clip_from_checkpoint(checkpoint)


def _clip_build_preset(preset: str, companions: Companions) -> nn.Module:
    raise UserError("CLIP models are loaded from weights (tapkit.load_clip), not built from a preset")


FAMILIES: tuple[Family, ...] = (
    Family("sca", (), _sca_recognizes, _sca_build, _sca_build_preset),
    Family("tap", ("tap_vit_b", "tap_vit_l", "tap_vit_h"), _tap_recognizes, _tap_build, _tap_build_preset),
    Family("sam", ("sam_vit_b", "sam_vit_l", "sam_vit_h"), _sam_recognizes, _sam_build, _sam_build_preset),
    Family("clip", (), _clip_recognizes, _clip_build, _clip_build_preset),
)

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
    """A weights file, or a directory as Hugging Face saves models (config.json + weights)."""
    from tapkit.checkpoint.io import load_checkpoint
    from tapkit.checkpoint.hf_dir import is_hf_directory, load_hf_directory
    from tapkit.models.clip.build import is_open_clip_directory, read_clip_checkpoint

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
