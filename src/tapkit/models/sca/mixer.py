"""The text feature mixer: learned caption query tokens read the backbone decoder's
state (its output tokens and updated image tokens) through a two-way transformer; the
query tokens' outputs become the language model's visual prefix."""

from __future__ import annotations

import torch
from torch import nn

from tapkit.models.outputs import PromptedState
from tapkit.models.sam.transformer import TwoWayTransformer
from tapkit.models.sca.config import MixerConfig


class TextFeatureMixer(nn.Module):
    def __init__(self, dim: int, cfg: MixerConfig):
        super().__init__()
        self.cfg = cfg
        self.caption_tokens = nn.Embedding(cfg.num_queries, dim)
        self.transformer = TwoWayTransformer(cfg.depth, dim, cfg.num_heads, cfg.mlp_dim, cfg.attention_downsample_rate, cfg.norm_eps)

    def forward(self, state: PromptedState) -> torch.Tensor:
        """-> (N, heads * tokens, C) caption query outputs. The query tokens are prepended
        to the decoder's output tokens; all of them are also their own positional term."""
        n = state.tokens.shape[0]
        queries = self.caption_tokens.weight.to(state.tokens.dtype).unsqueeze(0).expand(n, -1, -1)
        tokens = torch.cat([queries, state.tokens], dim=1)
        out = self.transformer(state.image, state.image_pe, tokens)
        return out.tokens[:, : self.cfg.num_queries]
