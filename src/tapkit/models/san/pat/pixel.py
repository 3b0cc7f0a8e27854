"""The pixel branch: bottom-up composition of the levels' tokens (each level adds its
own tokens to the composition of the finer ones, brought to its size), then top-down
visualization (from the coarsest composition down, each step upsampled and joined with
that level's composition) and a head that paints the image from the finest features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(1, cout), nn.GELU())


@dataclass
class PixelOutput:
    """reconstruction (B, 3, h_0 * f, w_0 * f) in the normalized image space (f the
    reconstruction factor, h_0 x w_0 the finest level); decoded: the top-down
    decoder's features per level, finest first, each (B, width, h_l, w_l)."""

    reconstruction: torch.Tensor
    decoded: list[torch.Tensor]


class PixelBranch(nn.Module):
    def __init__(self, num_levels: int, code_dim: int, width: int, recon_factor: int):
        super().__init__()
        self.recon_factor = recon_factor
        self.embed = nn.ModuleList(nn.Conv2d(code_dim, width, 1) for _ in range(num_levels))
        self.compose = nn.ModuleList(conv_block(width, width) for _ in range(num_levels))
        self.decode = nn.ModuleList(conv_block(width, width) for _ in range(num_levels))
        self.head = nn.Sequential(conv_block(width, width), nn.Conv2d(width, 3, 3, padding=1))

    def composition(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """Bottom-up: tokens (B, code_dim, h_l, w_l) finest first -> composed features."""
        composed, below = [], None
        for embed, compose, t in zip(self.embed, self.compose, tokens):
            x = embed(t)
            if below is not None:
                x = x + F.adaptive_avg_pool2d(below, x.shape[-2:])
            below = compose(x)
            composed.append(below)
        return composed

    def visualization(self, composed: list[torch.Tensor]) -> list[torch.Tensor]:
        """Top-down: from the coarsest level, each step upsampled to the next finer level
        and added to its composition. -> decoded features, finest first."""
        decoded, above = [], None
        for decode, c in zip(reversed(self.decode), reversed(composed)):
            x = c if above is None else c + F.interpolate(above, size=c.shape[-2:], mode="bilinear", align_corners=False)
            above = decode(x)
            decoded.append(above)
        return decoded[::-1]

    def paint(self, finest: torch.Tensor) -> torch.Tensor:
        f = self.recon_factor
        x = F.interpolate(finest, scale_factor=f, mode="bilinear", align_corners=False) if f > 1 else finest
        return self.head(x)

    def forward(self, tokens: list[torch.Tensor]) -> PixelOutput:
        decoded = self.visualization(self.composition(tokens))
        return PixelOutput(self.paint(decoded[0]), decoded)
