"""Released SAN checkpoints (MendelXu/SAN: `san_vit_b_16.pth`, `san_vit_large_14.pth`, a
detectron2 state dict, possibly under "model") in tapkit's naming, and the
architecture read off their tensors.

Official -> tapkit:
  clip_visual_extractor.{conv1,class_embedding,positional_embedding,ln_pre}  -> clip.visual.*
  clip_visual_extractor.resblocks.i                                          -> clip.visual.transformer.resblocks.i
  clip_rec_head.resblocks.j                          -> clip.visual.transformer.resblocks.(start + j)
  clip_rec_head.{ln_post,proj}                                               -> clip.visual.*
  ov_classifier.{token_embedding,positional_embedding,transformer,ln_final,text_projection,logit_scale} -> clip.*
  ov_classifier.bg_embed                                                     -> background.bg_embed
  side_adapter_network.vit_model.patch_embed.proj                            -> side.patch_embed
  side_adapter_network.vit_model.{pos_embed,blocks}                          -> side.*
  side_adapter_network.{query_embed,query_pos_embed}                         -> side.*
  side_adapter_network.fusion_layers.layer_k / .mask_decoder                 -> fusion.layer_k / mask_decoder
Dropped: criterion.empty_weight, ov_classifier.attn_mask (derived)."""

from __future__ import annotations

import math
import re
from typing import Collection, Mapping

import torch

from tapkit.models.clip.config import ClipConfig, TextConfig, VisionConfig
from tapkit.models.san.config import SanConfig, SideConfig

MARKERS = ("side_adapter_network.query_embed", "clip_rec_head.proj", "ov_classifier.bg_embed")
DROPPED = ("criterion.empty_weight", "ov_classifier.attn_mask")
# The side ViTs SAN ships (vit_w*n6d8_patch16) all have 6 heads; the tensors cannot say.
SIDE_HEADS = 6
OPENAI_HEAD_WIDTH = 64


def is_released_san(keys: Collection[str]) -> bool:
    return all(k in keys for k in MARKERS)


def _count(keys: Collection[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def recognition_start(keys: Collection[str]) -> int:
    return _count(keys, "clip_visual_extractor.resblocks.")


def tapkit_state_from_released(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = recognition_start(state)
    out = {}
    for key, value in state.items():
        if key in DROPPED:
            continue
        if m := re.match(r"clip_visual_extractor\.resblocks\.(\d+)\.(.*)", key):
            out[f"clip.visual.transformer.resblocks.{m.group(1)}.{m.group(2)}"] = value
        elif m := re.match(r"clip_rec_head\.resblocks\.(\d+)\.(.*)", key):
            out[f"clip.visual.transformer.resblocks.{start + int(m.group(1))}.{m.group(2)}"] = value
        elif key.startswith(("clip_visual_extractor.", "clip_rec_head.")):
            out["clip.visual." + key.split(".", 1)[1]] = value
        elif key == "ov_classifier.bg_embed":
            out["background.bg_embed"] = value
        elif key.startswith("ov_classifier."):
            out["clip." + key.removeprefix("ov_classifier.")] = value
        elif key.startswith("side_adapter_network.vit_model.patch_embed.proj."):
            out["side.patch_embed." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("side_adapter_network.vit_model."):
            out["side." + key.removeprefix("side_adapter_network.vit_model.")] = value
        elif key in ("side_adapter_network.query_embed", "side_adapter_network.query_pos_embed"):
            out["side." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("side_adapter_network.fusion_layers."):
            out["fusion." + key.removeprefix("side_adapter_network.fusion_layers.")] = value
        elif key.startswith("side_adapter_network.mask_decoder."):
            out[key.removeprefix("side_adapter_network.")] = value
        else:
            out[key] = value  # reported as unexpected by the loader
    return out


def config_from_released(state: Mapping[str, torch.Tensor]) -> SanConfig:
    keys = state.keys()
    start = recognition_start(keys)
    width = state["clip_visual_extractor.class_embedding"].shape[0]
    patch = state["clip_visual_extractor.conv1.weight"].shape[-1]
    grid = math.isqrt(state["clip_visual_extractor.positional_embedding"].shape[0] - 1)
    layers = start + _count(keys, "clip_rec_head.resblocks.")
    mlp = state["clip_rec_head.resblocks.0.mlp.c_fc.weight"].shape[0] / width
    vision = VisionConfig(grid * patch, patch, width, layers, width // OPENAI_HEAD_WIDTH, mlp)
    text_width = state["ov_classifier.ln_final.weight"].shape[0]
    text = TextConfig(state["ov_classifier.positional_embedding"].shape[0], state["ov_classifier.token_embedding.weight"].shape[0],
                      text_width, text_width // OPENAI_HEAD_WIDTH, _count(keys, "ov_classifier.transformer.resblocks."))
    clip = ClipConfig(state["clip_rec_head.proj"].shape[1], vision, text, quick_gelu=True)
    side_width = state["side_adapter_network.query_embed"].shape[-1]
    side_patch = state["side_adapter_network.vit_model.patch_embed.proj.weight"].shape[-1]
    side_grid = math.isqrt(state["side_adapter_network.vit_model.pos_embed"].shape[1])
    side_layers = _count(keys, "side_adapter_network.vit_model.blocks.")
    side_mlp = state["side_adapter_network.vit_model.blocks.0.mlp.fc1.weight"].shape[0] / side_width
    side = SideConfig(side_grid * side_patch, side_patch, side_width, side_layers, SIDE_HEADS, side_mlp,
                      state["side_adapter_network.query_embed"].shape[1])
    fused = sorted({int(m.group(1)) for k in keys if (m := re.match(r"side_adapter_network\.fusion_layers\.layer_(\d+)\.", k))})
    # SAN taps CLIP evenly up to recognition: 0->0, 3->1, 6->2, 9->3 (ViT-B), 0, 6, 12, 18 (ViT-L).
    fusion = tuple((s, s * start // max(fused[-1], 1)) for s in fused)
    decoder_layers = _count(keys, "side_adapter_network.mask_decoder.query_mlp.layers.")
    decoder_width = state["side_adapter_network.mask_decoder.query_mlp.layers.0.weight"].shape[0]
    return SanConfig(clip=clip, side=side, fusion=fusion, recognition_start=start,
                     deep_supervision=(side_layers - 1, side_layers), clip_resolution=0.7 if grid * patch == 336 else 0.5,
                     decoder_width=decoder_width, decoder_layers=decoder_layers, templates="vild")
