"""SAN's MLP mask decoder: 3-layer MLPs on the queries and (as 1x1 convs) on the patch
features; mask proposals are query . pixel embeddings, and one attention bias per CLIP
head the same way through its own pixel MLP, rescaled by a learnable affine scalar."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    """`layers` affine maps with ReLU between; `conv` makes them 1x1 convolutions."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int, conv: bool = False):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        make = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.layers = nn.ModuleList(make(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    def __init__(self, side_width: int, heads: int, width: int = 256, layers: int = 3):
        super().__init__()
        self.heads = heads
        self.query_mlp = MLP(side_width, width, width, layers)
        self.pix_mlp = MLP(side_width, width, width, layers, conv=True)
        self.attn_mlp = MLP(side_width, width, width * heads, layers, conv=True)
        self.bias_scaling = nn.Linear(1, 1)

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """queries (B, Q, C), pixels (B, C, h, w) -> mask logits (B, Q, h, w) and the
        attention bias (B, heads, Q, h, w)."""
        q = self.query_mlp(queries)
        masks = torch.einsum("bqc,bchw->bqhw", q, self.pix_mlp(pixels))
        attn = self.attn_mlp(pixels)
        b, _, h, w = attn.shape
        bias = torch.einsum("bqc,bnchw->bnqhw", q, attn.view(b, self.heads, -1, h, w))
        return masks, self.bias_scaling(bias.unsqueeze(-1)).squeeze(-1)
