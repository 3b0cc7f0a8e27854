"""SCA state-dict naming: tapkit's, and the released checkpoints' (the
segment-caption-anything repository's ScaMultitaskV2Model, whose SAM part uses
transformers' SamModel naming)."""

from __future__ import annotations

from typing import Collection, Mapping

TAPKIT_MARKER = "mixer.caption_tokens.weight"
RELEASED_MARKER = "mask_decoder.caption_tokens.weight"


def is_tapkit_sca(keys: Collection[str]) -> bool:
    return TAPKIT_MARKER in keys


def is_released_sca(keys: Collection[str], config: Mapping | None = None) -> bool:
    hf_config = (config or {}).get("hf_config") or {}
    return RELEASED_MARKER in keys or str(hf_config.get("model_type", "")).startswith("sca")
