"""Prompt encoder: points (with labels) to sparse tokens, and the dense positional
grid of the image embedding.

Labels: 0 background point, 1 foreground point, 2 box top-left corner,
3 box bottom-right corner, 4 padding point (its position is ignored).
"""

from __future__ import annotations

import torch
from torch import nn

from tapkit.inputs.labels import PADDING


# The official implementation uses this truncated value of pi; kept for bitwise parity.
_PI = 3.1415926


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int, image_size: int):
        super().__init__()
        self.image_size = image_size
        self.point_embed = nn.Embedding(5, embed_dim)
        self.register_buffer("coord_matrix", torch.randn(2, embed_dim // 2))

    def _apply(self, fn, recurse=True):
        # Random Fourier features stay in float32 whatever the model dtype.
        super()._apply(fn, recurse)
        self.coord_matrix.data = self.coord_matrix.data.float()
        return self

    def encode_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """coords: (..., 2) in [0, 1] as float32 -> (..., embed_dim) in the model dtype."""
        rad = coords.float().mul(4 * _PI).sub_(2 * _PI) @ self.coord_matrix
        return torch.cat([rad.sin(), rad.cos()], dim=-1).to(self.point_embed.weight.dtype)

    def normalize_coords(self, xy: torch.Tensor) -> torch.Tensor:
        """Pixel coordinates in the model's input frame -> [0, 1] (pixel centres)."""
        return xy.add(0.5).div(self.image_size).clamp(0, 1).float()

    def forward(self, xy: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """xy: (N, P, 2) float32 pixels of the resized image; labels: (N, P) int64.

        Returns the sparse prompt tokens, (N, P, embed_dim)."""
        embed = self.encode_coords(self.normalize_coords(xy))
        embed = embed * labels.ne(PADDING).unsqueeze(-1).to(embed.dtype)
        return embed + self.point_embed(labels)

    def dense_positions(self, height: int, width: int) -> torch.Tensor:
        """Positional encoding of every cell of an (height, width) embedding, (H * W, embed_dim)."""
        device = self.coord_matrix.device
        ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self.encode_coords(grid).flatten(0, 1)
