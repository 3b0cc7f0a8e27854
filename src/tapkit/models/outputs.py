"""What every promptable model family's `decode` returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DecoderOutput:
    """Per prompt, for each of the model's M masks: `mask_logits` (N, M, 4h, 4w)
    low-resolution logits, `iou` (N, M) float32 predicted quality, `sem_tokens`
    (N, M, ...) what the family's `caption` reads (TAP: the semantic token; SCA: the
    mixer's caption tokens; SAM: nothing, zero width) and `sem_embeds` (N, M, D) the
    concept embeddings (D = 0 for families without a concept head)."""

    mask_logits: torch.Tensor
    iou: torch.Tensor
    sem_tokens: torch.Tensor
    sem_embeds: torch.Tensor


@dataclass
class PromptedState:
    """A promptable segmenter's decoder after its two-way transformer, for N prompts:
    its `output`, the transformer's output `tokens` (N, T, C), the updated image tokens
    `image` (N, HW, C) and their positional encoding `image_pe` (1, HW, C). The SCA text
    feature mixer reads the last three."""

    output: DecoderOutput
    tokens: torch.Tensor
    image: torch.Tensor
    image_pe: torch.Tensor
