"""The server's one link to automatic mode ("segment everything").

Automatic mode lives in `tapkit.everything`, which this install may not have. The
server calls it only through `EverythingFn`: given a predictor already holding the
image's embedding and the image itself, return the regions found. `find_everything`
adapts the module to that signature, or returns None (the endpoint then answers 501)."""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from tapkit.predictor.predictor import Predictor
from tapkit.predictor.results import Region

EverythingFn = Callable[[Predictor, np.ndarray], list[Region]]

MODULE = "tapkit.everything"


def find_everything() -> EverythingFn | None:
    try:
        module = importlib.import_module(MODULE)
    except ModuleNotFoundError as err:
        if err.name in (MODULE, None):
            return None
        raise
    generate = getattr(module, "generate_everything", None)
    if generate is None:
        return None

    def everything(predictor: Predictor, rgb: np.ndarray) -> list[Region]:
        return list(generate(predictor, rgb))

    return everything
