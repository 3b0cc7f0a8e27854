"""Segment Anything (SAM), with the official checkpoints' naming and inference protocol."""

from tapkit.models.sam.config import PRESETS, SamConfig, SamDecoderConfig, SamEncoderConfig, infer_sam_config
from tapkit.models.sam.model import SamModel

__all__ = ["PRESETS", "SamConfig", "SamDecoderConfig", "SamEncoderConfig", "SamModel", "infer_sam_config"]
