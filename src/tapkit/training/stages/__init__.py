"""Training stages, one module each: what differs between them, as data (a `Stage`).
The engine's loop is the same for all; a new stage is one new module here and one
line in the engine's `STAGES`.

- `tap_segment`: TAP's promptable segmentation + concept stage (`tap` holds what
  TAP's two stages share: building, freezing, the objective, the export);
- `tap_caption`: TAP's captioning stage;
- `sca`: Segment-and-Caption-Anything's mixer on a frozen segmenter and LM;
- `clip`: a CLIP, contrastive, on crops and whole images with names and captions."""

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
