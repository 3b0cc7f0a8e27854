"""Prompt templates a class name is embedded with (the text embeddings are averaged
over them): ViLD's 14, as SAN uses, and the three the packaged CLIP was trained with."""

from __future__ import annotations

from tapkit.data.text_encoders import DEFAULT_TEMPLATES

VILD = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"vild": VILD, "synthetic": tuple(DEFAULT_TEMPLATES)}



def templates(name: str) -> tuple[str, ...]:
    return TEMPLATE_SETS[name]
