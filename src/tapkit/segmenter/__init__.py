"""The front door of open-vocabulary semantic segmentation (next to the Predictor):
an image and class names in, a typed `Segmentation` out."""

from tapkit.segmenter.load import load_segmenter
from tapkit.segmenter.segmenter import Segmentation, Segmenter

__all__ = ["Segmentation", "Segmenter", "load_segmenter"]
