"""The feature pyramid: frozen CLIP patch maps from several depths, each brought to its
level's resolution (average pooling by the level's stride) and normalised per channel."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.san.pat.config import PyramidLevel


def level_size(grid: tuple[int, int], stride: int) -> tuple[int, int]:
    """The (h, w) of a level pooled by `stride` from CLIP's (h, w) grid (at least 1 x 1)."""
    return max(1, grid[0] // stride), max(1, grid[1] // stride)


class FeaturePyramid(nn.Module):
    """Parameter-free: CLIP maps {layer: (B, width, h, w)} -> one (B, width, h_l, w_l)
    per level, finest first, each layer-normalised over channels (CLIP's block outputs
    grow in scale with depth; the codebooks see comparable features at every level)."""

    def __init__(self, levels: tuple[PyramidLevel, ...]):
        super().__init__()
        self.levels = levels

    def forward(self, maps: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for lv in self.levels:
            x = maps[lv.layer]
            size = level_size(x.shape[-2:], lv.stride)
            if size != tuple(x.shape[-2:]):
                x = F.adaptive_avg_pool2d(x, size)
            out.append(F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2]).permute(0, 3, 1, 2))
        return out
