"""The side network: a plain ViT (timm's block layout, no class token) whose patch
tokens are prepended with learnable queries that share its self-attention. CLIP's
features are added into the patch tokens by the fusion layers between blocks."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.san.config import SideConfig


class SideAttention(nn.Module):
    """timm's layout: `qkv` (3C, C) with bias, `proj`."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class SideMlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SideBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = SideAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = SideMlp(width, round(width * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SideViT(nn.Module):
    """Patch embedding, positional embedding (grid only), queries and blocks. The
    caller runs the blocks one at a time (`tokens`, `blocks`) to fuse CLIP in between."""

    def __init__(self, cfg: SideConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(3, cfg.width, cfg.patch_size, cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.grid_size**2, cfg.width) * 0.02)
        self.query_embed = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.width) * 0.02)
        self.query_pos_embed = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(SideBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))

    def positional(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1, Q + grid_h * grid_w, width): query positions, then the grid's (resized bicubically)."""
        pos = self.pos_embed
        g = self.cfg.grid_size
        if (grid_h, grid_w) != (g, g):
            pos = F.interpolate(pos.reshape(1, g, g, -1).permute(0, 3, 1, 2), size=(grid_h, grid_w), mode="bicubic",
                                align_corners=False).flatten(2).transpose(1, 2)
        return torch.cat([self.query_pos_embed, pos], 1)

    def tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """images (B, 3, H, W) normalized -> tokens (B, Q + h*w, width) (queries first,
        no positions yet) and the grid (h, w)."""
        x = self.patch_embed(images)
        grid = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        return torch.cat([self.query_embed.expand(x.shape[0], -1, -1), x], 1), grid
