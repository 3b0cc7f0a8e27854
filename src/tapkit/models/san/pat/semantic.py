"""The semantic branch: every level's features (the tokens, or the shared decoder's
features) projected, brought to the side network's grid and summed, then mixed into
one guidance map for SAN's side network. Its output projection starts at zero, so an
untrained PAT computes exactly what its SAN does."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SemanticBranch(nn.Module):
    def __init__(self, num_levels: int, in_dim: int, width: int, out_dim: int):
        super().__init__()
        self.level_proj = nn.ModuleList(nn.Conv2d(in_dim, width, 1) for _ in range(num_levels))
        self.mix = nn.Sequential(nn.GroupNorm(1, width), nn.GELU(), nn.Conv2d(width, width, 3, padding=1), nn.GELU())
        self.out = nn.Conv2d(width, out_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, levels: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """levels: (B, in_dim, h_l, w_l) each -> guidance (B, out_dim, *grid)."""
        fused = sum(F.interpolate(proj(x), size=grid, mode="bilinear", align_corners=False)
                    for proj, x in zip(self.level_proj, levels))
        return self.out(self.mix(fused))
