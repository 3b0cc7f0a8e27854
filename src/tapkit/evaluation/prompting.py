"""Evaluation prompts decoded in batches against the predictor's image.

Prompts are laid out by the model family's protocol (`protocol.box_prompts`,
`protocol.click_prompts`), in original-image pixels; boxes are not clipped to the
image, as in the reference."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from tapkit.predictor.predictor import DecodedPrompts, Predictor


def decode_in_batches(predictor: Predictor, prompts: np.ndarray, max_batch: int) -> Iterator[tuple[slice, DecodedPrompts]]:
    """Decodes (N, P, 3) prompts of equal length against the predictor's image,
    `max_batch` at a time; yields (rows, decoded)."""
    for start in range(0, len(prompts), max_batch):
        rows = slice(start, min(start + max_batch, len(prompts)))
        yield rows, predictor.decode_points(prompts[rows])
