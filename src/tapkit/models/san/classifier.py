"""The open vocabulary: class names -> CLIP text embeddings averaged over prompt
templates, plus SAN's learnable background embedding as the last ("no object") class."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.clip.model import ClipModel


class LearnableBackground(nn.Module):
    def __init__(self, embed_dim: int):
        super().__init__()
        self.bg_embed = nn.Parameter(torch.randn(1, embed_dim) * embed_dim**-0.5)

    def forward(self, class_embeddings: torch.Tensor) -> torch.Tensor:
        """(C, D) -> (C + 1, D), background last, every row L2-normalised."""
        return F.normalize(torch.cat([class_embeddings, self.bg_embed.to(class_embeddings.dtype)]), dim=-1)


def text_classifier(clip: ClipModel, tokens: torch.Tensor, num_templates: int) -> torch.Tensor:
    """tokens (C * T, L), the C names each in T templates (name-major) -> (C, D): the
    normalized mean of the normalized text embeddings."""
    text = F.normalize(clip.encode_text(tokens), dim=-1)
    return F.normalize(text.view(-1, num_templates, text.shape[-1]).mean(1), dim=-1)
