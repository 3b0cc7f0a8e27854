"""The server's link to automatic mode ("segment everything").

The server calls automatic mode through an `EverythingFn`: given a predictor already
holding the image's embedding and the image itself, return the regions found (objects
with `to_json()` in the region JSON form). `automatic_mode` builds the one generator a
model worker keeps for its lifetime and wraps it in that signature."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from tapkit.everything.generator import EverythingConfig, EverythingGenerator
from tapkit.models.interface import PromptableModel
from tapkit.predictor.predictor import Predictor


class JsonRegion(Protocol):
    def to_json(self) -> dict: ...


EverythingFn = Callable[[Predictor, np.ndarray], list[JsonRegion]]

# A 16 x 16 grid: a quarter of the CLI's default points, so a request stays interactive.
SERVER_POINTS_PER_SIDE = 16


def server_settings(model: PromptableModel) -> dict:
    """The server's own choice: a 16 x 16 grid, unless the model ships a grid of its own
    (its thresholds were measured with it)."""
    return {} if "points_per_side" in model.everything_defaults else {"points_per_side": SERVER_POINTS_PER_SIDE}


def automatic_mode(model: PromptableModel) -> EverythingFn:
    """Automatic mode on `model`, reusing the embedding the server cached for the image."""
    generator = EverythingGenerator(model, EverythingConfig.for_model(model, **server_settings(model)))

    def everything(predictor: Predictor, rgb: np.ndarray) -> list[JsonRegion]:
        return list(generator.generate(rgb, embedding=predictor.image).regions)

    return everything
