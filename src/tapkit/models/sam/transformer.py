"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Used by the mask decoder (2 layers) and by the SCA text feature mixer (12 layers).
The arithmetic is the official implementation's, with attention through
`scaled_dot_product_attention` (same softmax(q k^T / sqrt(d)) v, to float rounding) and
the image-side residual added in place without grad; the image side may have batch size
1 while the tokens have batch size N (the image is shared by all prompts): it is then
projected once and broadcast, which gives each prompt what it gets alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.sam.image_encoder import MLPBlock


class Attention(nn.Module):
    """Multi-head attention whose inner width may be `dim / downsample_rate`."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1):
        super().__init__()
        self.internal_dim = dim // downsample_rate
        self.num_heads = num_heads
        assert self.internal_dim % num_heads == 0, "num_heads must divide the inner width"
        self.q_proj = nn.Linear(dim, self.internal_dim)
        self.k_proj = nn.Linear(dim, self.internal_dim)
        self.v_proj = nn.Linear(dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: (Bq, Nq, C); k, v: (Bk, Nk, C) with Bq and Bk equal or one of them 1."""
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        b = max(q.shape[0], k.shape[0], v.shape[0])
        q, k, v = (t.expand(b, -1, -1, -1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(q.shape[-1]))
        n = out.shape[2]
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.internal_dim))


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, tokens -> image, token MLP, image -> tokens. The first
    block skips the positional term (and the residual) of the self-attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool, norm_eps: float):
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLPBlock(dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.norm4 = nn.LayerNorm(dim, eps=norm_eps)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        update = self.cross_attn_image_to_token(k, q, queries)
        keys = self.norm4(update.add_(keys) if not torch.is_grad_enabled() else keys + update)
        return queries, keys


@dataclass
class TwoWayState:
    """The transformer's output: `tokens` (N, T, C) and the updated image `keys` (N, HW, C)."""

    tokens: torch.Tensor
    keys: torch.Tensor


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int = 2, norm_eps: float = 1e-5):
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, downsample_rate, i == 0, norm_eps) for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor) -> TwoWayState:
        """image: (1 or N, HW, C) image tokens; image_pe: (1, HW, C) their positions;
        tokens: (N, T, C) query tokens, which are also their own positional term."""
        queries, keys = tokens, image
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, image_pe)
        q, k = queries + tokens, keys + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return TwoWayState(queries, keys.expand(tokens.shape[0], -1, -1))
