"""CLIP's image tower: a pre-norm ViT whose class token, after `ln_post`, is projected
by `proj` (width, embed_dim) into the joint embedding space."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.clip.config import VisionConfig
from tapkit.models.clip.transformer import Transformer


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig, embed_dim: int, quick_gelu: bool = False):
        super().__init__()
        self.cfg = cfg
        self.patch_size, self.grid_size, self.width, self.heads = cfg.patch_size, cfg.grid_size, cfg.width, cfg.heads
        scale = cfg.width**-0.5
        self.conv1 = nn.Conv2d(3, cfg.width, cfg.patch_size, cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid_size**2 + 1, cfg.width))
        self.ln_pre = nn.LayerNorm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, quick_gelu)
        self.ln_post = nn.LayerNorm(cfg.width)
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, embed_dim))

    def positional_embedding_for(self, grid_h: int, grid_w: int, antialias: bool = True) -> torch.Tensor:
        """(1 + grid_h * grid_w, width): the learned grid resized bicubically (antialiased,
        as open_clip resizes it; SAN resizes without) when the image is not the trained size."""
        if (grid_h, grid_w) == (self.grid_size, self.grid_size):
            return self.positional_embedding
        cls, grid = self.positional_embedding[:1], self.positional_embedding[1:]
        grid = grid.reshape(1, self.grid_size, self.grid_size, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(grid_h, grid_w), mode="bicubic", antialias=antialias, align_corners=False)
        return torch.cat([cls, grid.to(cls.dtype).flatten(2)[0].t()], 0)

    def embed(self, images: torch.Tensor, antialias: bool = True) -> torch.Tensor:
        """images (B, 3, H, W), normalized, sides multiples of the patch -> tokens
        (B, 1 + (H/patch)*(W/patch), width) after ln_pre; `antialias`: how the positional
        embedding is resized (see positional_embedding_for)."""
        x = self.conv1(images)
        pos = self.positional_embedding_for(x.shape[2], x.shape[3], antialias)
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + pos.to(x.dtype)
        return self.ln_pre(x)

    def head(self, class_token: torch.Tensor) -> torch.Tensor:
        """class_token (..., width) -> (..., embed_dim), not normalized."""
        return self.ln_post(class_token) @ self.proj

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) -> image features (B, embed_dim), not normalized."""
        return self.head(self.transformer(self.embed(images))[:, 0])
