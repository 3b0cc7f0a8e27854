"""Building TAP models: from a named preset (random weights) or from a checkpoint,
whose architecture is read off its tensors."""

from __future__ import annotations

import torch

from tapkit.checkpoint.io import Checkpoint, CheckpointError, check_fit, load_checked
from tapkit.models.tap.concepts import ConceptFileError, ConceptVocabulary
from tapkit.models.tap.config import PRESETS, ArchitectureError, TapConfig, infer_config, shapes_of
from tapkit.models.tap.model import PIXEL_STATISTICS, TapModel, is_derived_key
from tapkit.models.tap.tokenizer import TextTokenizer, TokenizerError


def preset_config(name: str) -> TapConfig:
    if name not in PRESETS:
        raise ArchitectureError(f"unknown preset '{name}'; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def check_companions(cfg: TapConfig, tokenizer: TextTokenizer | None, concepts: ConceptVocabulary | None) -> None:
    """Raises a one-line error when the tokenizer or concepts do not fit the model."""
    if tokenizer is not None:
        if cfg.text_decoder is None:
            raise TokenizerError("the checkpoint has no text decoder, so a tokenizer cannot be used with it")
        if tokenizer.n_words != cfg.text_decoder.vocab_size:
            raise TokenizerError(
                f"tokenizer {tokenizer.path} has {tokenizer.n_words} pieces but the checkpoint's text "
                f"decoder has a vocabulary of {cfg.text_decoder.vocab_size}: wrong tokenizer for this model"
            )
    if concepts is not None and concepts.embed_dim != cfg.image_decoder.sem_embed_dim:
        raise ConceptFileError(
            f"concept embeddings are {concepts.embed_dim}-d but the model predicts "
            f"{cfg.image_decoder.sem_embed_dim}-d semantic embeddings"
        )


def stored_pixel_statistics(tensors: dict[str, torch.Tensor], path) -> dict[str, torch.Tensor]:
    """The normalization the checkpoint stores (`pixel_mean`, `pixel_rsig`, BGR), which the
    reference loads into its buffers and normalizes with. Absent or shape-only (meta)
    tensors leave the defaults."""
    stored = {}
    for name in PIXEL_STATISTICS:
        value = tensors.get(name)
        if value is None or value.is_meta:
            continue
        if value.numel() != 3 or not value.is_floating_point():
            raise CheckpointError(f"{path}: {name} must be 3 floats (B, G, R), got shape {tuple(value.shape)} {value.dtype}")
        stored[name] = value.detach().flatten()
    return stored


def tap_from_checkpoint(
    checkpoint: Checkpoint,
    tokenizer: TextTokenizer | None = None,
    concepts: ConceptVocabulary | None = None,
    preset: str | None = None,
) -> TapModel:
    pixel_statistics = stored_pixel_statistics(checkpoint.tensors, checkpoint.path)
    tensors = {k: v for k, v in checkpoint.tensors.items() if not is_derived_key(k)}
    if preset is not None:
        cfg = preset_config(preset)
        with torch.device("meta"):  # shapes only: a preset that does not fit is named as such
            expected = TapModel(cfg).learned_state_dict()
        try:
            check_fit(expected, tensors, checkpoint.path, "TAP")
        except CheckpointError as err:
            raise ArchitectureError(f"--preset {preset} does not fit this checkpoint: {err}") from None
    elif checkpoint.config is not None:
        cfg = TapConfig.from_dict(checkpoint.config)
    else:
        cfg = infer_config(shapes_of(tensors))
    check_companions(cfg, tokenizer, concepts)
    model = TapModel(cfg, tokenizer, concepts)
    load_checked(model, model.learned_state_dict(), tensors, checkpoint.path, "TAP")
    model.set_pixel_statistics(**pixel_statistics)
    return model.eval()
