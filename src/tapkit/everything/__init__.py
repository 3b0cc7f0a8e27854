"""Tokenize everything: every region of an image segmented, named and captioned,
from a grid of point prompts (the automatic mode), for one image or a million.

    from tapkit.everything import EverythingConfig, EverythingGenerator, tokenize_everything
    result = tokenize_everything(model, "photo.jpg", points_per_side=32)
"""

from tapkit.everything.batch import BatchSummary, collect_images, run_batch
from tapkit.everything.generator import (
    EverythingConfig,
    EverythingGenerator,
    EverythingRegion,
    EverythingResult,
    FilterCounts,
    StageTimings,
    tokenize_everything,
)

__all__ = [
    "BatchSummary",
    "EverythingConfig",
    "EverythingGenerator",
    "EverythingRegion",
    "EverythingResult",
    "FilterCounts",
    "StageTimings",
    "collect_images",
    "run_batch",
    "tokenize_everything",
]
