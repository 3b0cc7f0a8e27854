"""TAP architecture as data: typed configs, the named presets, and reading the
architecture off a checkpoint's tensors."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from tapkit.errors import UserError

# BGR order, as the reference reads images with OpenCV.
PIXEL_MEAN_BGR = (103.53, 116.28, 123.675)
PIXEL_STD_BGR = (57.375, 57.12, 58.395)


@dataclass(frozen=True)
class ImageEncoderConfig:
    depth: int = 12
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: int = 4
    patch_size: int = 16
    window_size: int = 16
    image_size: int = 1024
    out_dim: int = 256

    def __post_init__(self):
        """Architectures the encoder cannot take are refused here, in one line, so that a
        config or an override (`--set model.image_encoder.depth=2`) fails before building."""
        if min(self.depth, self.embed_dim, self.num_heads, self.mlp_ratio, self.patch_size, self.window_size,
               self.image_size, self.out_dim) < 1:
            raise UserError(f"image encoder sizes must be positive, got {self}")
        if self.depth % 4:
            raise UserError(f"image encoder depth must be a multiple of 4 (a cross-window block closes each quarter "
                            f"of the encoder), got {self.depth}")
        if self.embed_dim % self.num_heads:
            raise UserError(f"image encoder embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        grid, rest = divmod(self.image_size, self.patch_size)
        if rest or grid % self.window_size:
            raise UserError(f"image encoder image_size {self.image_size} must be patch_size {self.patch_size} x a "
                            f"multiple of window_size {self.window_size}")


@dataclass(frozen=True)
class ImageDecoderConfig:
    embed_dim: int = 256
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    cross_attn_dim: int = 128
    num_mask_tokens: int = 4
    sem_embed_dim: int = 1024


@dataclass(frozen=True)
class TextDecoderConfig:
    depth: int = 12
    embed_dim: int = 512
    num_heads: int = 8
    mlp_ratio: int = 4
    prompt_embed_dim: int = 256
    max_seq_len: int = 40
    vocab_size: int = 32000


@dataclass(frozen=True)
class TapConfig:
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    image_decoder: ImageDecoderConfig = field(default_factory=ImageDecoderConfig)
    text_decoder: TextDecoderConfig | None = field(default_factory=TextDecoderConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "TapConfig":
        text = data.get("text_decoder")
        return cls(
            image_encoder=ImageEncoderConfig(**data["image_encoder"]),
            image_decoder=ImageDecoderConfig(**data["image_decoder"]),
            text_decoder=TextDecoderConfig(**text) if text else None,
        )


PRESETS: dict[str, TapConfig] = {
    "tap_vit_b": TapConfig(ImageEncoderConfig(depth=12, embed_dim=768, num_heads=12)),
    "tap_vit_l": TapConfig(ImageEncoderConfig(depth=24, embed_dim=1024, num_heads=16)),
    "tap_vit_h": TapConfig(ImageEncoderConfig(depth=32, embed_dim=1280, num_heads=16)),
}


class ArchitectureError(UserError):
    """The tensors do not describe a TAP model."""


def _count(keys, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def infer_config(shapes: Mapping[str, tuple[int, ...]]) -> TapConfig:
    """Reads the architecture off a state dict's tensor shapes (name -> shape).

    Head counts are not stored in the weights of the two small decoders; they
    follow the official rule (256 / 32 heads in the image decoder, 64-d heads in
    the text decoder)."""

    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise ArchitectureError(f"not a TAP checkpoint: tensor '{name}' is missing")
        return tuple(shapes[name])

    keys = list(shapes)
    patch = shape("image_encoder.patch_embed.proj.weight")
    embed_dim, patch_size = patch[0], patch[2]
    grid = math.isqrt(shape("image_encoder.pos_embed.weight")[0])
    heads, table = shape("image_encoder.blocks.0.attn.rel_pos_embed.weight")
    window = (math.isqrt(table) + 1) // 2
    encoder = ImageEncoderConfig(
        depth=_count(keys, r"image_encoder\.blocks\.(\d+)\."),
        embed_dim=embed_dim,
        num_heads=heads,
        mlp_ratio=shape("image_encoder.blocks.0.mlp.fc1.weight")[0] // embed_dim,
        patch_size=patch_size,
        window_size=window,
        image_size=grid * patch_size,
        out_dim=shape("image_encoder.neck.lateral_conv.0.0.weight")[0],
    )
    dec_dim = shape("image_decoder.iou_token.weight")[1]
    decoder = ImageDecoderConfig(
        embed_dim=dec_dim,
        depth=_count(keys, r"image_decoder\.transformer\.blocks\.(\d+)\."),
        num_heads=max(dec_dim // 32, 1),
        mlp_dim=shape("image_decoder.transformer.blocks.0.mlp.fc1.weight")[0],
        cross_attn_dim=shape("image_decoder.transformer.blocks.0.cross_attn_token_to_image.q_proj.weight")[0],
        num_mask_tokens=shape("image_decoder.mask_tokens.weight")[0],
        sem_embed_dim=shape("image_decoder.sem_pred.layers.2.weight")[0],
    )
    text = None
    if "text_decoder.encoder.weight" in shapes:
        text_dim, prompt_dim = shape("text_decoder.encoder.weight")
        text = TextDecoderConfig(
            depth=_count(keys, r"text_decoder\.transformer\.blocks\.(\d+)\."),
            embed_dim=text_dim,
            num_heads=max(text_dim // 64, 1),
            mlp_ratio=shape("text_decoder.transformer.blocks.0.mlp.fc1.weight")[0] // text_dim,
            prompt_embed_dim=prompt_dim,
            vocab_size=shape("text_decoder.transformer.tok_embeddings.weight")[0],
        )
    return TapConfig(encoder, decoder, text)


def shapes_of(state: Mapping[str, "np.ndarray"]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}
