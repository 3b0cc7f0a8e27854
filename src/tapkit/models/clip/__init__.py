"""CLIP (OpenAI's ViT CLIP as open_clip and transformers ship it): the two towers, the
tokenizer, the eval transform, loading every layout, and the `Clip` a user holds."""

from tapkit.models.clip.config import ClipConfig, TextConfig, VisionConfig
from tapkit.models.clip.encoder import Clip
from tapkit.models.clip.model import ClipModel
from tapkit.models.clip.tokenizer import ClipTokenizer

__all__ = ["Clip", "ClipConfig", "ClipModel", "ClipTokenizer", "TextConfig", "VisionConfig"]
