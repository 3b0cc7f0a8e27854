"""Inference-time memory reuse shared by the decoders of every family."""

from __future__ import annotations

import torch
from torch import nn


def upscale_embedding(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Runs a decoder's upscaling convolutions with their exact GELUs in place when no
    gradient is recorded (the upscaled maps, (N, C/8, 4h, 4w), are the decoders'
    largest tensors, and a fresh one costs page faults). Same numbers as `layers(x)`."""
    for layer in layers:
        inplace = type(layer) is nn.GELU and layer.approximate == "none" and not torch.is_grad_enabled()
        x = torch.ops.aten.gelu_(x) if inplace else layer(x)
    return x
