"""Feature Pyramid Tokenization, assembled: the pyramid of frozen CLIP maps, one
codebook per level (a 1x1 encoder into the code space first), the pixel branch that
reconstructs the image from the tokens, and the semantic branch that turns the levels
into guidance for SAN's side network.

Coupling (the abstract's "loosely coupled" branches): with `loose`, the semantic branch
reads its inputs detached, so the segmentation loss trains the semantic branch alone and
the tokens and the pixel decoder learn from reconstruction and the codebook terms; with
`coupled`, segmentation gradients flow into them as well (straight-through the codes)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tapkit.models.san.pat.codebook import VectorQuantizer
from tapkit.models.san.pat.config import PatConfig
from tapkit.models.san.pat.pixel import PixelBranch
from tapkit.models.san.pat.pyramid import FeaturePyramid
from tapkit.models.san.pat.semantic import SemanticBranch


@dataclass
class PatOutput:
    """guidance (B, side width, h, w) for the side network's patch tokens;
    reconstruction (B, 3, h, w) normalized like the input; indices: per level (B, h_l, w_l)
    code maps, finest first; codebook_loss: the levels' summed codebook terms (scalar);
    usage / perplexity: per level, as `Quantized` reports them."""

    guidance: torch.Tensor
    reconstruction: torch.Tensor
    indices: list[torch.Tensor]
    codebook_loss: torch.Tensor
    usage: list[float]
    perplexity: list[float]


class FeaturePyramidTokenizer(nn.Module):
    def __init__(self, cfg: PatConfig, clip_width: int, side_width: int):
        super().__init__()
        self.cfg = cfg
        n, dim = len(cfg.levels), cfg.codebook.dim
        self.pyramid = FeaturePyramid(cfg.levels)
        self.encoders = nn.ModuleList(nn.Conv2d(clip_width, dim, 1) for _ in range(n))
        self.codebooks = nn.ModuleList(VectorQuantizer(cfg.codebook) for _ in range(n))
        self.pixel = PixelBranch(n, dim, cfg.width, cfg.recon_factor)
        self.semantic = SemanticBranch(n, cfg.width if cfg.shared_decoder else dim, cfg.guidance_width, side_width)

    def forward(self, maps: dict[int, torch.Tensor], grid: tuple[int, int]) -> PatOutput:
        """maps: CLIP layer -> (B, clip width, h, w) (every layer of `cfg.levels`);
        grid: the side network's (h, w)."""
        levels = self.pyramid(maps)
        quantized = [cb(enc(x)) for enc, cb, x in zip(self.encoders, self.codebooks, levels)]
        tokens = [q.quantized for q in quantized]
        pixel = self.pixel(tokens)
        inputs = pixel.decoded if self.cfg.shared_decoder else tokens
        if self.cfg.coupling == "loose":
            inputs = [x.detach() for x in inputs]
        guidance = self.semantic(inputs, grid) * self.cfg.guidance_scale
        return PatOutput(guidance, pixel.reconstruction, [q.indices for q in quantized],
                         sum(q.loss for q in quantized), [q.usage for q in quantized], [q.perplexity for q in quantized])
