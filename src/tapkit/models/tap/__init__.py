"""Tokenize Anything via Prompting (TAP)."""

from tapkit.models.tap.config import PRESETS, TapConfig, infer_config
from tapkit.models.tap.model import TapModel

__all__ = ["PRESETS", "TapConfig", "TapModel", "infer_config"]
