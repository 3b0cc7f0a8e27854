"""PAT's own training terms: reconstruction of the image the tokens came from, and the
codebook terms. SAN's losses are added by the training stage."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def reconstruction_target(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """images (B, 3, H, W) normalized -> (B, 3, *size), area-averaged."""
    return F.adaptive_avg_pool2d(images, size)


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L1 between the reconstruction (B, 3, h, w) and the images brought to h x w."""
    target = reconstruction_target(images, tuple(reconstruction.shape[-2:]))
    return F.l1_loss(reconstruction, target.to(reconstruction.dtype))
