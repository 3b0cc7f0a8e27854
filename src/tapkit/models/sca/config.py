"""SCA architecture as data. The backbone and the language model keep their own
configs (the backbone's tapkit config dict, the language model's transformers config
dict); this adds the text feature mixer and the task tokens."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

# Task prefixes, as in the released model: region recognition (detection class names
# as captions) and region captioning.
TASKS = ("recognition", "caption")

# The released models caption with transformers' generate(max_length=20), whose count
# includes the one virtual BOS position generate puts before the inputs_embeds prefix:
# at most 19 tokens are generated (EOS included).
RELEASED_MAX_NEW_TOKENS = 19


@dataclass(frozen=True)
class MixerConfig:
    """The text feature mixer: a two-way transformer over [caption query tokens, the
    backbone decoder's output tokens] and the backbone's updated image tokens. The
    paper's setting: 12 layers, 8 query tokens (one caption head), 8 heads, MLP 2048.
    `norm_eps` is the eps of its block LayerNorms (1e-6, as in the released model)."""

    depth: int = 12
    num_caption_tokens: int = 8
    num_caption_heads: int = 1
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    norm_eps: float = 1e-6

    @property
    def num_queries(self) -> int:
        return self.num_caption_tokens * self.num_caption_heads


@dataclass(frozen=True)
class ScaConfig:
    backbone: dict
    text_config: dict
    mixer: MixerConfig = field(default_factory=MixerConfig)
    num_task_tokens: int = 6
    max_new_tokens: int = 20

    def to_dict(self) -> dict:
        return {"family": "sca", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ScaConfig":
        return cls(
            backbone=dict(data["backbone"]),
            text_config=dict(data["text_config"]),
            mixer=MixerConfig(**data.get("mixer", {})),
            num_task_tokens=int(data.get("num_task_tokens", 6)),
            max_new_tokens=int(data.get("max_new_tokens", 20)),
        )
