"""SAM's prompt encoder: labelled points to sparse tokens, an optional low-resolution
mask to a dense embedding, and the dense positional grid of the image embedding.

Labels use tapkit's convention for every model family: 0 background point,
1 foreground point, 2 box top-left, 3 box bottom-right, 4 padding ("not a point").
That is SAM's own set ({0, 1}, the two box corners, and -1 for padding), so a
prompt gives the tokens SamPredictor gives: the padding point's position is
ignored and it carries only the not-a-point embedding."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tapkit.inputs.labels import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, PADDING
from tapkit.models.sam.image_encoder import LayerNorm2d



class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of (x, y) in [0, 1]: sin and cos of 2 pi (2 p - 1) G."""

    def __init__(self, num_pos_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) normalized coordinates -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * np.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid, (C, h, w)."""
        device = self.positional_encoding_gaussian_matrix.device
        ones = torch.ones((h, w), device=device, dtype=torch.float32)
        y = (ones.cumsum(dim=0) - 0.5) / h
        x = (ones.cumsum(dim=1) - 0.5) / w
        return self.encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def points(self, xy: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(N, P, 2) pixel coordinates in an (H, W) input frame -> (N, P, C)."""
        coords = xy.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self.encode(coords.to(torch.float))


class PromptEncoder(nn.Module):
    def __init__(self, embed_dim: int, embedding_size: int, image_size: int, mask_in_chans: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = (embedding_size, embedding_size)
        self.input_image_size = (image_size, image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def _apply(self, fn, recurse=True):
        # The random Fourier matrix stays float32 whatever the model dtype (as positions
        # are encoded in float32 by the official code too).
        super()._apply(fn, recurse)
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        matrix.data = matrix.data.float()
        return self

    def dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, (1, h * w, C) in the model dtype."""
        h, w = self.image_embedding_size
        pe = self.pe_layer.grid(h, w).flatten(1).transpose(0, 1).unsqueeze(0)
        return pe.to(self.no_mask_embed.weight.dtype)

    def embed_points(self, xy: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """xy: (N, P, 2) float32 pixels of the model input frame; labels: (N, P) int64.
        Returns the sparse tokens, (N, P, C)."""
        table = torch.cat([e.weight for e in self.point_embeddings] + [self.not_a_point_embed.weight])
        padding = labels.eq(PADDING).unsqueeze(-1)
        # Shift to pixel centres; the padding point sits at (0, 0) after the shift, as in the official code.
        coords = (xy.float() + 0.5).masked_fill(padding, 0.0)
        embed = self._encode_like_official(coords, labels)
        return (embed.masked_fill(padding, 0.0) + table.float()[labels]).to(table.dtype)

    def _encode_like_official(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Positional encodings of (N, P, 2) shifted coordinates. The official predictor
        encodes one prompt's clicks (with the padding point) and its box corners in two
        separate calls; a matrix product's rounding depends on its shape, so each group is
        encoded with exactly the shape it has there, and the answers match bit for bit."""
        is_box = (labels.eq(BOX_TOP_LEFT) | labels.eq(BOX_BOTTOM_RIGHT)).cpu()
        embed = coords.new_empty((*labels.shape, self.embed_dim))
        for n in range(labels.shape[0]):
            for group in (~is_box[n], is_box[n]):
                index = group.nonzero().squeeze(1).to(coords.device)
                if index.numel():
                    embed[n, index] = self.pe_layer.points(coords[n : n + 1, index], self.input_image_size)[0]
        return embed

    def embed_masks(self, masks: torch.Tensor | None) -> torch.Tensor:
        """Dense prompt embedding: (N, 1, 4h, 4w) mask logits -> (N, C, h, w); without
        masks, the no-mask embedding as (1, C, 1, 1) (it broadcasts over prompts and cells)."""
        if masks is None:
            return self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self.mask_downscaling(masks.to(self.no_mask_embed.weight.dtype))
