"""The server's one link to automatic mode ("segment everything").

The server calls automatic mode only through `EverythingFn`: given a predictor
already holding the image's embedding and the image itself, return the regions
found (objects with `to_json()` in the region JSON form). `find_everything` adapts
`tapkit.everything` to that signature, or returns None (the endpoint answers 501)."""

from __future__ import annotations

import importlib
from typing import Callable, Protocol

import numpy as np

from tapkit.predictor.predictor import Predictor


class JsonRegion(Protocol):
    def to_json(self) -> dict: ...


EverythingFn = Callable[[Predictor, np.ndarray], list[JsonRegion]]

MODULE = "tapkit.everything"

# A 16 x 16 grid: a quarter of the CLI's default points, so a request stays interactive.
SERVER_POINTS_PER_SIDE = 16


def find_everything() -> EverythingFn | None:
    try:
        module = importlib.import_module(MODULE)
    except ModuleNotFoundError as err:
        if err.name in (MODULE, None):
            return None
        raise
    config = module.EverythingConfig(points_per_side=SERVER_POINTS_PER_SIDE)

    def everything(predictor: Predictor, rgb: np.ndarray) -> list[JsonRegion]:
        generator = module.EverythingGenerator(predictor.model, config)
        return list(generator.generate(rgb, embedding=predictor.image).regions)

    return everything
