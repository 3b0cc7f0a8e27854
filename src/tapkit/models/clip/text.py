"""CLIP's text tower: token + positional embeddings, a causal transformer, `ln_final`,
pooled at the end-of-text token (the highest id in each row), projected by
`text_projection` (width, embed_dim)."""

from __future__ import annotations

import torch
from torch import nn

from tapkit.models.clip.config import TextConfig
from tapkit.models.clip.transformer import Transformer


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(L, L) additive mask: -inf above the diagonal."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu(1)


class TextTransformer(nn.Module):
    """The text tower's parameters carry OpenAI's top-level names (`token_embedding`,
    `positional_embedding`, `transformer`, `ln_final`, `text_projection`); ClipModel
    extends this module so that a CLIP state dict maps onto it one to one."""

    def __init__(self, cfg: TextConfig, embed_dim: int, quick_gelu: bool = False):
        super().__init__()
        self.text_cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(cfg.width**-0.5 * torch.randn(cfg.width, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (N, L) ids, L <= context_length -> text features (N, embed_dim), not normalized."""
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.ln_final(self.transformer(x, causal_mask(tokens.shape[1], x.dtype, x.device)))
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return pooled @ self.text_projection
