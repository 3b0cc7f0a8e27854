"""The project's default model files, shipped inside the package (a small TAP trained
on the synthetic world; see docs/training.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tapkit.errors import UserError

ASSETS = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class ModelFiles:
    checkpoint: Path
    tokenizer: Path | None
    concepts: Path | None


def default_model_files() -> ModelFiles:
    """The packaged default model, or a one-line error saying what is missing."""
    checkpoint = ASSETS / "default_model.safetensors"
    if not checkpoint.is_file():
        raise UserError(
            f"no --checkpoint given and the packaged default model is missing ({checkpoint}); "
            "pass --checkpoint CKPT, e.g. an official tap_vit_b_v1_1.pkl"
        )
    tokenizer, concepts = ASSETS / "default_tokenizer.model", ASSETS / "default_concepts.pkl"
    return ModelFiles(checkpoint, tokenizer if tokenizer.is_file() else None, concepts if concepts.is_file() else None)


def default_clip_dir() -> Path:
    """The packaged CLIP (an open_clip-layout folder; trained on the synthetic world, see
    docs/clip.md), or a one-line error."""
    folder = ASSETS / "clip"
    if not (folder / "open_clip_config.json").is_file():
        raise UserError(f"no CLIP path given and the packaged default CLIP is missing ({folder}); "
                        "pass a CLIP checkpoint (open_clip or transformers folder, or a state dict with a tokenizer)")
    return folder


def default_san_dir() -> Path:
    """The packaged open-vocabulary segmenter (a SAN on the packaged CLIP, trained on the
    synthetic world, see docs/segment.md): model.safetensors + its tokenizer, or a one-line error."""
    folder = ASSETS / "san"
    if not (folder / "model.safetensors").is_file():
        raise UserError(f"no checkpoint given and the packaged SAN is missing ({folder}); pass --checkpoint CKPT")
    return folder
