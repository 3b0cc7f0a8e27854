"""What differs between training stages, as data: the engine's loop is the same for
TAP's stages (segment, caption) and SCA's (sca)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class Stage:
    """build_model(cfg) -> model; freeze(model, cfg) sets which parameters train;
    objective(model, cfg) -> module whose forward(batch) gives a LossOutput;
    batches(cfg, model, dist_info) -> step-indexed dataset (with a `skips` counter);
    export(model, full_state) -> the tensors of the final .safetensors."""

    build_model: Callable
    freeze: Callable
    objective: Callable[..., nn.Module]
    batches: Callable
    export: Callable[[nn.Module, dict], dict]
