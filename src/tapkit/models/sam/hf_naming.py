"""SAM weights in the Hugging Face naming (transformers' SamModel, and the SAM inside
the released Segment-and-Caption-Anything checkpoints) <-> the official naming.

The mapping is the inverse of transformers' conversion script: module names differ
(`vision_encoder.layers` for `image_encoder.blocks`, `layer_norm1` for `norm1`, ...),
and its 3-layer MLPs are named proj_in / layers.j / proj_out instead of layers.0..2."""

from __future__ import annotations

import re
from typing import Mapping

import torch

# (Hugging Face, official) name fragments, applied to the part of a key after its
# top-level module. Order matters: longer, more specific fragments first.
_RENAMES = (
    (r"^vision_encoder\.", "image_encoder."),
    (r"^image_encoder\.layers\.", "image_encoder.blocks."),
    (r"\.patch_embed\.projection\.", ".patch_embed.proj."),
    (r"^(image_encoder\.blocks\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"\.neck\.conv1\.", ".neck.0."),
    (r"\.neck\.layer_norm1\.", ".neck.1."),
    (r"\.neck\.conv2\.", ".neck.2."),
    (r"\.neck\.layer_norm2\.", ".neck.3."),
    (r"^prompt_encoder\.shared_embedding\.positional_embedding$", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.point_embed\.", "prompt_encoder.point_embeddings."),
    (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
    (r"(\.transformer\.layers\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
)

# transformers' SamFeedForward: proj_in, layers.0 .. layers.(L-3), proj_out.
_FEED_FORWARD = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(proj_in|proj_out|layers\.(\d+))\.(.*)$")
_OFFICIAL_MLP = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.(.*)$")

# The Hugging Face model keeps a second reference to the positional matrix.
HF_SHARED_PE = "shared_image_embedding.positional_embedding"


def _rename(key: str, renames) -> str:
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


def sam_state_from_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A SAM state dict in the Hugging Face naming -> the official naming."""
    hidden: dict[str, set[int]] = {}
    for key in state:
        m = _FEED_FORWARD.match(key)
        if m and m.group(3) is not None:
            hidden.setdefault(m.group(1), set()).add(int(m.group(3)))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == HF_SHARED_PE:
            # transformers keeps one matrix under two names and may save only this one.
            out.setdefault("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", value)
            continue
        m = _FEED_FORWARD.match(key)
        if m:
            module, part, hidden_index, rest = m.groups()
            if part == "proj_in":
                index = 0
            elif part == "proj_out":
                index = len(hidden.get(module, ())) + 1
            else:
                index = int(hidden_index) + 1
            out[f"{module}.layers.{index}.{rest}"] = value
            continue
        out[_rename(key, _RENAMES)] = value  # the prompt encoder's own name wins over the shared one
    return out


_INVERSE = (
    (r"^image_encoder\.blocks\.(\d+)\.norm(\d)\.", r"image_encoder.blocks.\1.layer_norm\2."),
    (r"^image_encoder\.blocks\.", "image_encoder.layers."),
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.neck\.0\.", ".neck.conv1."),
    (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."),
    (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"^prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", "prompt_encoder.shared_embedding.positional_embedding"),
    (r"^prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^prompt_encoder\.point_embeddings\.", "prompt_encoder.point_embed."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"(\.transformer\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"^mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
)


def hf_state_from_sam(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official naming -> the Hugging Face naming (with its shared positional matrix)."""
    depths: dict[str, int] = {}
    for key in state:
        m = _OFFICIAL_MLP.match(key)
        if m:
            depths[m.group(1)] = max(depths.get(m.group(1), 0), int(m.group(2)) + 1)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _OFFICIAL_MLP.match(key)
        if m:
            module, index, rest = m.group(1), int(m.group(2)), m.group(3)
            part = "proj_in" if index == 0 else "proj_out" if index == depths[module] - 1 else f"layers.{index - 1}"
            out[f"{module}.{part}.{rest}"] = value
            continue
        out[_rename(key, _INVERSE)] = value
    pe = out.get("prompt_encoder.shared_embedding.positional_embedding")
    if pe is not None:
        out[HF_SHARED_PE] = pe
    return out


def two_way_key_from_hf(key: str) -> str:
    """A two-way transformer's parameter name (relative to the transformer), HF -> official."""
    return _rename(f"mask_decoder.transformer.{key}", _RENAMES)[len("mask_decoder.transformer.") :]


def two_way_key_to_hf(key: str) -> str:
    """A two-way transformer's parameter name (relative to the transformer), official -> HF."""
    return _rename(f"mask_decoder.transformer.{key}", _INVERSE)[len("mask_decoder.transformer.") :]
