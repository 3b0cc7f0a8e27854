"""SAM architecture as data: typed configs, the three official presets, and reading
the architecture off a state dict in the official naming."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Mapping

from tapkit.errors import UserError

# The official normalisation, RGB order, on 0-255 pixels.
PIXEL_MEAN_RGB = (123.675, 116.28, 103.53)
PIXEL_STD_RGB = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamEncoderConfig:
    """ViT with windowed blocks and a few global-attention blocks (`global_attn_indexes`),
    decomposed relative positions, and a conv neck to `out_dim` channels."""

    depth: int = 12
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    window_size: int = 14
    image_size: int = 1024
    out_dim: int = 256
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    qkv_bias: bool = True
    use_abs_pos: bool = True
    use_rel_pos: bool = True

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class SamDecoderConfig:
    """Prompt encoder and mask decoder. `norm_eps` is the eps of the two-way transformer's
    block LayerNorms: 1e-5 in the official code, 1e-6 in the Hugging Face port."""

    embed_dim: int = 256
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    norm_eps: float = 1e-5

    @property
    def num_mask_tokens(self) -> int:
        return self.num_multimask_outputs + 1


@dataclass(frozen=True)
class SamConfig:
    encoder: SamEncoderConfig = field(default_factory=SamEncoderConfig)
    decoder: SamDecoderConfig = field(default_factory=SamDecoderConfig)

    def to_dict(self) -> dict:
        return {"family": "sam", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "SamConfig":
        enc = dict(data["encoder"])
        enc["global_attn_indexes"] = tuple(enc.get("global_attn_indexes", ()))
        return cls(SamEncoderConfig(**enc), SamDecoderConfig(**data["decoder"]))


PRESETS: dict[str, SamConfig] = {
    "sam_vit_b": SamConfig(SamEncoderConfig(depth=12, embed_dim=768, num_heads=12, global_attn_indexes=(2, 5, 8, 11))),
    "sam_vit_l": SamConfig(SamEncoderConfig(depth=24, embed_dim=1024, num_heads=16, global_attn_indexes=(5, 11, 17, 23))),
    "sam_vit_h": SamConfig(SamEncoderConfig(depth=32, embed_dim=1280, num_heads=16, global_attn_indexes=(7, 15, 23, 31))),
}


class SamArchitectureError(UserError):
    """The tensors do not describe a SAM model."""


def _indices(keys, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := regex.match(k))})


def infer_sam_config(shapes: Mapping[str, tuple[int, ...]], prefix: str = "") -> SamConfig:
    """Reads the architecture off tensor shapes (official naming, keys under `prefix`).

    Head counts are not stored in the weights: the encoder's follows from the relative
    position tables (their width is the head dimension); the decoder's from the
    official rule of 32 channels per head (256 -> 8 heads). A block is global when its
    relative-position table spans the whole patch grid (2 * grid - 1 rows)."""

    def shape(name: str) -> tuple[int, ...]:
        if prefix + name not in shapes:
            raise SamArchitectureError(f"not a SAM checkpoint: tensor '{prefix}{name}' is missing")
        return tuple(shapes[prefix + name])

    keys = [k[len(prefix):] for k in shapes if k.startswith(prefix)]
    embed_dim, _, patch_size, _ = shape("image_encoder.patch_embed.proj.weight")
    blocks = _indices(keys, r"image_encoder\.blocks\.(\d+)\.")
    if blocks != list(range(len(blocks))) or not blocks:
        raise SamArchitectureError("not a SAM checkpoint: image encoder blocks are missing or not numbered 0..N-1")
    use_abs_pos = "image_encoder.pos_embed" in keys
    use_rel_pos = "image_encoder.blocks.0.attn.rel_pos_h" in keys
    if use_abs_pos:
        grid = shape("image_encoder.pos_embed")[1]
    else:
        grid = 1024 // patch_size
    if use_rel_pos:
        sizes = [(shape(f"image_encoder.blocks.{i}.attn.rel_pos_h")[0] + 1) // 2 for i in blocks]
        head_dim = shape("image_encoder.blocks.0.attn.rel_pos_h")[1]
        global_blocks = tuple(i for i, s in zip(blocks, sizes) if s == grid)
        windows = {s for s in sizes if s != grid}
        if len(windows) > 1:
            raise SamArchitectureError(f"windowed blocks disagree on the window size: {sorted(windows)}")
        window = windows.pop() if windows else 0
        num_heads = embed_dim // head_dim
    else:
        raise SamArchitectureError(
            "a SAM checkpoint without relative positions does not record its window size or head count; "
            "pass --preset"
        )
    encoder = SamEncoderConfig(
        depth=len(blocks),
        embed_dim=embed_dim,
        num_heads=num_heads,
        mlp_ratio=shape("image_encoder.blocks.0.mlp.lin1.weight")[0] / embed_dim,
        patch_size=patch_size,
        window_size=window,
        image_size=grid * patch_size,
        out_dim=shape("image_encoder.neck.0.weight")[0],
        global_attn_indexes=global_blocks,
        qkv_bias="image_encoder.blocks.0.attn.qkv.bias" in keys,
        use_abs_pos=use_abs_pos,
        use_rel_pos=use_rel_pos,
    )
    dim = shape("mask_decoder.iou_token.weight")[1]
    iou_layers = _indices(keys, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.")
    decoder = SamDecoderConfig(
        embed_dim=dim,
        depth=len(_indices(keys, r"mask_decoder\.transformer\.layers\.(\d+)\.")),
        num_heads=max(dim // 32, 1),
        mlp_dim=shape("mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        attention_downsample_rate=dim // shape("mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight")[0],
        num_multimask_outputs=shape("mask_decoder.mask_tokens.weight")[0] - 1,
        iou_head_depth=len(iou_layers),
        iou_head_hidden_dim=shape("mask_decoder.iou_prediction_head.layers.0.weight")[0],
        mask_in_chans=shape("prompt_encoder.mask_downscaling.3.weight")[0],
    )
    return SamConfig(encoder, decoder)
