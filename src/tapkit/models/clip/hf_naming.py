"""transformers' `CLIPModel` tensor names -> OpenAI's (the names ClipModel uses):
separate q/k/v projections become one `in_proj`, Linear projections become the
(width, embed_dim) matrices OpenAI multiplies by."""

from __future__ import annotations

import re
from typing import Mapping

import torch

_BLOCK = re.compile(r"^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$")
_TOWER = {"text": "", "vision": "visual."}
_BLOCK_PARTS = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                "self_attn.out_proj": "attn.out_proj"}
_SINGLE = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}
# Buffers older transformers versions saved; they are not weights.
_IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def is_hf_clip_state(keys) -> bool:
    return "vision_model.embeddings.patch_embedding.weight" in keys and "text_model.embeddings.token_embedding.weight" in keys


def hf_to_openai(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames every tensor; unknown names are kept as they are (the loader then reports them)."""
    out, qkv = {}, {}
    for name, value in tensors.items():
        if name in _IGNORED:
            continue
        if name in _SINGLE:
            out[_SINGLE[name]] = value
        elif name in _TRANSPOSED:
            out[_TRANSPOSED[name]] = value.t().contiguous()
        elif (m := _BLOCK.match(name)) is not None:
            tower, index, rest = m.groups()
            prefix = f"{_TOWER[tower]}transformer.resblocks.{index}."
            proj = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
            if proj is not None:
                qkv.setdefault((prefix, proj.group(2)), {})[proj.group(1)] = value
                continue
            part, _, kind = rest.rpartition(".")
            out[prefix + _BLOCK_PARTS.get(part, part) + "." + kind] = value
        else:
            out[name] = value
    for (prefix, kind), parts in qkv.items():
        if set(parts) == {"q", "k", "v"}:  # else in_proj is missing, which the loader reports
            out[f"{prefix}attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out
