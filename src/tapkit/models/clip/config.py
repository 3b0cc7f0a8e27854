"""CLIP architecture as data: typed configs, read from an open_clip `model_cfg`, from a
transformers `CLIPConfig` (config.json), or off the tensors of an OpenAI-format state dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch

from tapkit.errors import UserError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# OpenAI's checkpoints record no head counts; both towers use 64-wide heads.
OPENAI_HEAD_WIDTH = 64


@dataclass(frozen=True)
class VisionConfig:
    """Pre-norm ViT: conv patch embedding, class token, `layers` blocks of `width`."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    """Causal text transformer pooled at the end-of-text token (the highest id)."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0


@dataclass(frozen=True)
class PreprocessConfig:
    """open_clip's eval transform: bicubic resize of the shorter side, centre crop, mean/std."""

    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"


@dataclass(frozen=True)
class ClipConfig:
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = False
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def to_dict(self) -> dict:
        """The open_clip_config.json layout: {"model_cfg": ..., "preprocess_cfg": ...}."""
        v, t, p = self.vision, self.text, self.preprocess
        return {
            "model_cfg": {
                "embed_dim": self.embed_dim,
                "quick_gelu": self.quick_gelu,
                "vision_cfg": {"image_size": v.image_size, "layers": v.layers, "width": v.width,
                               "patch_size": v.patch_size, "head_width": v.width // v.heads, "mlp_ratio": v.mlp_ratio},
                "text_cfg": {"context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width,
                             "heads": t.heads, "layers": t.layers, "mlp_ratio": t.mlp_ratio},
            },
            "preprocess_cfg": {"mean": list(p.mean), "std": list(p.std), "interpolation": p.interpolation,
                               "resize_mode": "shortest"},
        }


# open_clip options this implementation does not build; a checkpoint that turns one on is refused.
_UNSUPPORTED_VISION = {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
                       "final_ln_after_pool": False, "pool_type": "tok", "timm_model_name": None, "qk_norm": False,
                       "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
                       "scale_fc": False}
_UNSUPPORTED_TEXT = {"ls_init_value": None, "hf_model_name": None, "pool_type": "argmax", "proj_bias": False,
                     "proj_type": "linear", "no_causal_mask": False, "embed_cls": False, "pad_id": 0,
                     "final_ln_after_pool": False, "qk_norm": False}
_UNSUPPORTED_MODEL = {"custom_text": None, "multimodal_cfg": None, "init_logit_bias": None}


def _check_supported(section: Mapping, defaults: Mapping, where: str) -> None:
    for key, default in defaults.items():
        if key in section and section[key] != default and not (key == "custom_text" and section[key] is False):
            raise UserError(f"unsupported CLIP option {where}{key}={section[key]!r}: tapkit builds the plain OpenAI ViT CLIP")


def _int(value, where: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise UserError(f"unsupported CLIP option {where}={value!r}: only square images and patches")
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool):
        raise UserError(f"CLIP config {where} must be an integer, got {value!r}")
    return value


def from_open_clip(data: Mapping) -> ClipConfig:
    """An `open_clip_config.json` ({"model_cfg", "preprocess_cfg"}) or a bare model config."""
    model_cfg = data.get("model_cfg", data)
    pre = data.get("preprocess_cfg", {}) or {}
    try:
        vc, tc = model_cfg["vision_cfg"], model_cfg["text_cfg"]
        _check_supported(model_cfg, _UNSUPPORTED_MODEL, "")
        _check_supported(vc, _UNSUPPORTED_VISION, "vision_cfg.")
        _check_supported(tc, _UNSUPPORTED_TEXT, "text_cfg.")
        width = _int(vc.get("width", 768), "vision_cfg.width")
        layers = vc.get("layers", 12)
        if not isinstance(layers, int):
            raise UserError("unsupported CLIP vision tower: a ResNet (layers given per stage); tapkit builds ViT CLIPs")
        vision = VisionConfig(
            image_size=_int(vc.get("image_size", 224), "vision_cfg.image_size"),
            patch_size=_int(vc.get("patch_size", 16), "vision_cfg.patch_size"), width=width, layers=layers,
            heads=width // _int(vc.get("head_width", 64), "vision_cfg.head_width"),
            mlp_ratio=float(vc.get("mlp_ratio", 4.0)))
        text = TextConfig(
            context_length=_int(tc.get("context_length", 77), "text_cfg.context_length"),
            vocab_size=_int(tc.get("vocab_size", 49408), "text_cfg.vocab_size"),
            width=_int(tc.get("width", 512), "text_cfg.width"), heads=_int(tc.get("heads", 8), "text_cfg.heads"),
            layers=_int(tc.get("layers", 12), "text_cfg.layers"), mlp_ratio=float(tc.get("mlp_ratio", 4.0)))
        embed_dim = _int(model_cfg["embed_dim"], "embed_dim")
    except (KeyError, TypeError, AttributeError) as err:
        raise UserError(f"malformed open_clip model config: missing or bad {err}") from None
    preprocess = PreprocessConfig(
        mean=tuple(float(x) for x in pre.get("mean", OPENAI_MEAN)),
        std=tuple(float(x) for x in pre.get("std", OPENAI_STD)),
        interpolation=pre.get("interpolation", "bicubic"))
    if pre.get("resize_mode", "shortest") != "shortest" or preprocess.interpolation not in ("bicubic", "bilinear"):
        raise UserError(f"unsupported CLIP preprocessing {dict(pre)}: tapkit follows open_clip's 'shortest' resize, "
                        "bicubic or bilinear")
    return ClipConfig(embed_dim, vision, text, bool(model_cfg.get("quick_gelu", False)), preprocess)


def from_transformers(data: Mapping) -> ClipConfig:
    """A transformers `CLIPConfig` as saved in config.json."""
    try:
        vc, tc = data.get("vision_config") or {}, data.get("text_config") or {}
        acts = {vc.get("hidden_act", "quick_gelu"), tc.get("hidden_act", "quick_gelu")}
        if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
            raise UserError(f"unsupported CLIP activation(s) {sorted(acts)}: tapkit builds quick_gelu or gelu")
        v_width, t_width = vc.get("hidden_size", 768), tc.get("hidden_size", 512)
        vision = VisionConfig(image_size=vc.get("image_size", 224), patch_size=vc.get("patch_size", 32), width=v_width,
                              layers=vc.get("num_hidden_layers", 12), heads=vc.get("num_attention_heads", 12),
                              mlp_ratio=vc.get("intermediate_size", 3072) / v_width)
        text = TextConfig(context_length=tc.get("max_position_embeddings", 77), vocab_size=tc.get("vocab_size", 49408),
                          width=t_width, heads=tc.get("num_attention_heads", 8), layers=tc.get("num_hidden_layers", 12),
                          mlp_ratio=tc.get("intermediate_size", 2048) / t_width)
        for eps in (vc.get("layer_norm_eps", 1e-5), tc.get("layer_norm_eps", 1e-5)):
            if abs(eps - 1e-5) > 1e-12:
                raise UserError(f"unsupported CLIP layer_norm_eps {eps}: OpenAI's CLIP uses 1e-5")
        return ClipConfig(int(data.get("projection_dim", 512)), vision, text, acts == {"quick_gelu"})
    except (TypeError, AttributeError) as err:
        raise UserError(f"malformed transformers CLIP config.json: {err}") from None


def from_state_dict(tensors: Mapping[str, torch.Tensor], quick_gelu: bool = True) -> ClipConfig:
    """Reads the architecture off OpenAI-format tensors (heads: 64-wide, OpenAI's rule).
    `quick_gelu` cannot be read off weights: OpenAI's own checkpoints use it."""
    try:
        conv = tensors["visual.conv1.weight"]
        width, patch = conv.shape[0], conv.shape[-1]
        grid = round((tensors["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        v_layers = _count_blocks(tensors, "visual.transformer.resblocks.")
        v_mlp = tensors["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width
        t_width = tensors["ln_final.weight"].shape[0]
        t_mlp = tensors["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / t_width
        vision = VisionConfig(grid * patch, patch, width, v_layers, max(1, width // OPENAI_HEAD_WIDTH), v_mlp)
        text = TextConfig(tensors["positional_embedding"].shape[0], tensors["token_embedding.weight"].shape[0], t_width,
                          max(1, t_width // OPENAI_HEAD_WIDTH), _count_blocks(tensors, "transformer.resblocks."), t_mlp)
        return ClipConfig(tensors["text_projection"].shape[1], vision, text, quick_gelu)
    except (KeyError, IndexError) as err:
        raise UserError(f"not an OpenAI-format CLIP state dict: missing {err}") from None


def _count_blocks(tensors: Mapping, prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".")[0]) for k in tensors if k.startswith(prefix)}
    if not ids:
        raise KeyError(prefix + "0")
    return max(ids) + 1

