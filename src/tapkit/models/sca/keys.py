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


def tapkit_state_from_released(state: Mapping) -> dict:
    """A released SCA state dict (ScaMultitaskV2Model naming) -> tapkit's SCA naming."""
    from tapkit.models.sam.hf_naming import sam_state_from_hf, two_way_key_from_hf

    mixer_prefix = "mask_decoder.additional_transformer."
    sam_part, out = {}, {}
    for key, value in state.items():
        if key.startswith(mixer_prefix):
            out["mixer.transformer." + two_way_key_from_hf(key[len(mixer_prefix):])] = value
        elif key == RELEASED_MARKER:
            out[TAPKIT_MARKER] = value
        elif key.startswith("language_project."):
            out["projection." + key[len("language_project."):]] = value
        elif key == "task_tokens.weight" or key.startswith("language_model."):
            out[key] = value
        else:
            sam_part[key] = value
    out.update({f"backbone.{k}": v for k, v in sam_state_from_hf(sam_part).items()})
    return out


def released_state_from_tapkit(state: Mapping) -> dict:
    """tapkit's SCA naming (with a SAM backbone) -> the released naming."""
    from tapkit.models.sam.hf_naming import hf_state_from_sam, two_way_key_to_hf

    sam_part, out = {}, {}
    for key, value in state.items():
        if key.startswith("mixer.transformer."):
            out["mask_decoder.additional_transformer." + two_way_key_to_hf(key[len("mixer.transformer."):])] = value
        elif key == TAPKIT_MARKER:
            out[RELEASED_MARKER] = value
        elif key.startswith("projection."):
            out["language_project." + key[len("projection."):]] = value
        elif key.startswith("backbone."):
            sam_part[key[len("backbone."):]] = value
        else:
            out[key] = value
    out.update(hf_state_from_sam(sam_part))
    return out
