"""Recognising, building and loading SCA models.

- `build_sca(backbone, language_model, ...)`: a new SCA (random mixer) on a frozen
  backbone (SAM or TAP model) and a frozen transformers causal LM.
- tapkit SCA checkpoints: .safetensors whose metadata records the ScaConfig (the
  backbone's config and the LM's transformers config); tensors `backbone.*`,
  `mixer.*`, `projection.*`, `task_tokens.weight`, `language_model.*`.
- Released checkpoints (Hugging Face repos xk-huang/segment-caption-anything-*): the
  downloaded directory (config.json + weights); keys mapped by `keys.py`.

transformers is imported only here (the `[sca]` extra)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from tapkit.checkpoint.io import Checkpoint, CheckpointError
from tapkit.errors import UserError
from tapkit.models.family import Companions
from tapkit.models.sam.build import HF_DECODER_NORM_EPS
from tapkit.models.sam.config import infer_sam_config
from tapkit.models.sam.family import FAMILY as SAM
from tapkit.models.sca.config import RELEASED_MAX_NEW_TOKENS, TASKS, MixerConfig, ScaConfig
from tapkit.models.sca.keys import is_released_sca, is_tapkit_sca, tapkit_state_from_released
from tapkit.models.sca.model import ScaModel
from tapkit.models.sca.tokenizer import load_caption_tokenizer
from tapkit.models.tap.family import FAMILY as TAP

# The segmenters an SCA can be built on (its backbone is recognised like any checkpoint).
BACKBONE_FAMILIES = (TAP, SAM)

HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "tokenizer_config.json")


def is_sca_checkpoint(checkpoint: Checkpoint) -> bool:
    return is_tapkit_sca(checkpoint.tensors) or is_released_sca(checkpoint.tensors, checkpoint.config)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("SCA models need the transformers package: pip install 'tapkit-vision[sca]'") from None
    return transformers


def language_model_from_config(text_config: Mapping) -> nn.Module:
    """A causal LM of the given transformers config (a dict with model_type), randomly
    initialized; weights are loaded afterwards."""
    transformers = _transformers()
    config = dict(text_config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise CheckpointError("the SCA checkpoint's language-model config has no model_type")
    hf_config = transformers.AutoConfig.for_model(model_type, **config)
    return transformers.AutoModelForCausalLM.from_config(hf_config).eval()


def build_sca(
    backbone: nn.Module,
    language_model: nn.Module,
    tokenizer=None,
    mixer: MixerConfig | None = None,
    num_task_tokens: int = 6,
    max_new_tokens: int = 20,
) -> ScaModel:
    """A new SCA: the mixer and task tokens are freshly initialized (LayerNorms at
    identity, linear weights small), the projection at zero, backbone and LM frozen.

    A zero projection starts the language model from the task tokens alone, its own
    prior, and the visual prefix grows from there (the usual adapter practice). On the
    synthetic world, zero, 0.001 and 0.02 standard deviations learned at the same pace,
    while 0.2 made the frozen LM read the prefix as noise (docs/sam_sca.md)."""
    cfg = ScaConfig(
        backbone=backbone.cfg.to_dict(),
        text_config=language_model.config.to_dict(),
        mixer=mixer or MixerConfig(),
        num_task_tokens=num_task_tokens,
        max_new_tokens=max_new_tokens,
    )
    model = ScaModel(cfg, backbone, language_model, load_caption_tokenizer(tokenizer))
    for name, p in model.named_parameters():
        if name.startswith(("mixer.", "task_tokens.")) and p.ndim > 1:
            nn.init.normal_(p, std=0.02)
    nn.init.zeros_(model.projection.weight)
    nn.init.zeros_(model.projection.bias)
    return model


def _load_language_model(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Loads `language_model.*` tensors, tolerating the tied output embedding and the
    attention-mask buffers that older transformers versions stored."""
    state = {k[len("language_model."):]: v for k, v in tensors.items() if k.startswith("language_model.")}
    if not state:
        raise CheckpointError(f"{source} holds no language-model weights (language_model.*)")
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.endswith((".attn.bias", ".attn.masked_bias"))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {name for name, p in model.named_parameters(remove_duplicate=False)} - {name for name, _ in model.named_parameters()}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{source}: language-model weights do not match its config ({detail})")


def _load_trainable(model: ScaModel, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.trainable_state_dict()
    state = {k: v for k, v in tensors.items() if k.startswith(("mixer.", "projection.", "task_tokens."))}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{source} does not match the SCA mixer architecture ({detail})")
    for name, value in state.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{source}: tensor {name} has shape {tuple(value.shape)}, the architecture needs {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=False)


def _backbone(tensors: Mapping[str, torch.Tensor], config: dict | None, path: Path) -> nn.Module:
    """The frozen segmenter under the mixer: the `backbone.*` tensors as a SAM or TAP."""
    sub = Checkpoint({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")}, config, path)
    for family in BACKBONE_FAMILIES:
        if family.recognizes(sub):
            return family.build(sub, Companions())
    raise CheckpointError(f"{path}: the SCA backbone is neither a SAM nor a TAP (none of their tensors were found)")


def _tokenizer_for(path: Path, tokenizer, recorded: str | None):
    if tokenizer is not None:
        return load_caption_tokenizer(tokenizer)
    folder = path if path.is_dir() else path.parent
    if recorded:
        candidate = folder / recorded
        if candidate.exists():
            return load_caption_tokenizer(candidate)
    if path.is_dir() and any((path / n).is_file() for n in HF_TOKENIZER_FILES):
        return load_caption_tokenizer(path)
    return None


def sca_from_checkpoint(checkpoint: Checkpoint, tokenizer=None) -> ScaModel:
    if is_tapkit_sca(checkpoint.tensors):
        if not checkpoint.config or checkpoint.config.get("family") != "sca":
            raise CheckpointError(f"{checkpoint.path}: an SCA checkpoint must record its config (save it with tapkit)")
        cfg = ScaConfig.from_dict(checkpoint.config)
        tensors = checkpoint.tensors
        recorded_tokenizer = checkpoint.config.get("tokenizer")
    else:
        cfg, tensors = released_config(checkpoint)
        recorded_tokenizer = None
    backbone = _backbone(tensors, cfg.backbone, checkpoint.path)
    language_model = language_model_from_config(cfg.text_config)
    _load_language_model(language_model, tensors, str(checkpoint.path))
    model = ScaModel(cfg, backbone, language_model, _tokenizer_for(Path(checkpoint.path), tokenizer, recorded_tokenizer))
    _load_trainable(model, tensors, str(checkpoint.path))
    if model.tokenizer is not None and model.tokenizer.vocab_size > language_model.get_input_embeddings().weight.shape[0]:
        raise UserError(
            f"the tokenizer has {model.tokenizer.vocab_size} pieces but the language model only "
            f"{language_model.get_input_embeddings().weight.shape[0]} embeddings: wrong tokenizer for this model"
        )
    return model.eval()


def released_config(checkpoint: Checkpoint) -> tuple[ScaConfig, dict[str, torch.Tensor]]:
    """The ScaConfig of a released checkpoint (its config.json and tensor shapes) and its
    tensors in tapkit's naming."""
    hf = (checkpoint.config or {}).get("hf_config")
    if not hf or "text_config" not in hf:
        raise CheckpointError(f"{checkpoint.path}: a released SCA checkpoint comes with its config.json (text_config missing)")
    tensors = tapkit_state_from_released(checkpoint.tensors)
    sam_tensors = {k[len("backbone."):]: tuple(v.shape) for k, v in tensors.items() if k.startswith("backbone.")}
    sam = infer_sam_config(sam_tensors)
    sam = dataclasses.replace(sam, decoder=dataclasses.replace(sam.decoder, norm_eps=HF_DECODER_NORM_EPS))
    decoder = hf.get("mask_caption_decoder_config") or {}
    layers = {k.split(".")[3] for k in tensors if k.startswith("mixer.transformer.layers.")}
    num_queries = tensors["mixer.caption_tokens.weight"].shape[0]
    heads = int(decoder.get("num_caption_heads", 1))
    mixer = MixerConfig(
        depth=len(layers),
        num_caption_tokens=num_queries // heads,
        num_caption_heads=heads,
        num_heads=int(decoder.get("num_attention_heads", 8)),
        mlp_dim=tensors["mixer.transformer.layers.0.mlp.lin1.weight"].shape[0] if layers else 2048,
        attention_downsample_rate=int(decoder.get("attention_downsample_rate", 2)),
        norm_eps=float(decoder.get("layer_norm_eps", 1e-6)),
    )
    num_task_tokens = tensors["task_tokens.weight"].shape[0] // len(TASKS)
    cfg = ScaConfig(backbone=sam.to_dict(), text_config=dict(hf["text_config"]), mixer=mixer, num_task_tokens=num_task_tokens,
                    max_new_tokens=RELEASED_MAX_NEW_TOKENS)
    return cfg, tensors


def save_sca(model: ScaModel, path, tokenizer_name: str | None = None) -> None:
    """Writes a self-contained tapkit SCA checkpoint (.safetensors with its config in the
    metadata). `tokenizer_name`: a tokenizer file or folder next to the checkpoint that
    loading picks up by itself."""
    from tapkit.checkpoint.io import save_safetensors

    config = model.cfg.to_dict()
    if tokenizer_name:
        config["tokenizer"] = tokenizer_name
    save_safetensors(model.learned_state_dict(), path, config=config)
