"""CLIP: the image tower (`visual`) and the text tower (OpenAI's top-level names), with
the learned temperature `logit_scale` (its log, as OpenAI stores it)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.clip.config import ClipConfig
from tapkit.models.clip.text import TextTransformer
from tapkit.models.clip.vision import VisionTransformer


class ClipModel(TextTransformer):
    family = "clip"

    def __init__(self, cfg: ClipConfig):
        super().__init__(cfg.text, cfg.embed_dim, cfg.quick_gelu)
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.visual = VisionTransformer(cfg.vision, cfg.embed_dim, cfg.quick_gelu)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def image_size(self) -> int:
        return self.cfg.vision.image_size

    @property
    def context_length(self) -> int:
        return self.cfg.text.context_length

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, S, S), normalized -> (N, embed_dim), not normalized."""
        return self.visual(images)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (image features (N, D), text features (M, D)), both L2-normalised."""
        return F.normalize(self.encode_image(images), dim=-1), F.normalize(self.encode_text(tokens), dim=-1)
