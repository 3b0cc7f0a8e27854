"""CLIP -> side network fusion ("add"): a channel LayerNorm and a 1x1 conv bring a CLIP
feature map to the side width, resized bilinearly to the side grid and added to the
side network's patch tokens."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of (B, C, H, W)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - u) / torch.sqrt(s + self.eps) + self.bias[:, None, None]


class AddFusion(nn.Module):
    def __init__(self, clip_width: int, side_width: int):
        super().__init__()
        self.input_proj = nn.Sequential(ChannelLayerNorm(clip_width), nn.Conv2d(clip_width, side_width, 1))
        nn.init.kaiming_uniform_(self.input_proj[1].weight, a=1)
        nn.init.zeros_(self.input_proj[1].bias)

    def forward(self, patches: torch.Tensor, clip_map: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """patches (B, h*w, side width), clip_map (B, clip width, H', W') -> (B, h*w, side width)."""
        y = F.interpolate(self.input_proj(clip_map), size=grid, mode="bilinear", align_corners=False)
        return patches + y.flatten(2).transpose(1, 2)
