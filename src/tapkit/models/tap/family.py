"""TAP as a registered family: recognised by its image decoder's tensors."""

from __future__ import annotations

from torch import nn

from tapkit.checkpoint.io import Checkpoint
from tapkit.models.family import Companions, Family
from tapkit.models.tap.build import check_companions, preset_config, tap_from_checkpoint
from tapkit.models.tap.concepts import ConceptVocabulary
from tapkit.models.tap.model import TapModel
from tapkit.models.tap.tokenizer import TextTokenizer


def recognizes(checkpoint: Checkpoint) -> bool:
    return any(k.startswith("image_decoder.") for k in checkpoint.tensors)


def _companions(companions: Companions) -> tuple[TextTokenizer | None, ConceptVocabulary | None]:
    tok, voc = companions.tokenizer, companions.concepts
    tok = tok if tok is None or isinstance(tok, TextTokenizer) else TextTokenizer(tok)
    voc = voc if voc is None or isinstance(voc, ConceptVocabulary) else ConceptVocabulary.load(voc)
    return tok, voc


def build(checkpoint: Checkpoint, companions: Companions) -> nn.Module:
    tok, voc = _companions(companions)
    return tap_from_checkpoint(checkpoint, tok, voc, companions.preset)


def build_preset(preset: str, companions: Companions) -> nn.Module:
    cfg = preset_config(preset)
    tok, voc = _companions(companions)
    check_companions(cfg, tok, voc)
    return TapModel(cfg, tok, voc).eval()


FAMILY = Family("tap", ("tap_vit_b", "tap_vit_l", "tap_vit_h"), recognizes, build, build_preset)
