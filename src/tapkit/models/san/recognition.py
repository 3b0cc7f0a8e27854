"""CLIP's half of SAN: the feature maps the side network fuses (the stem and the first
blocks), and recognition by the last CLIP blocks with attention bias.

Recognition runs `Q` extra tokens, copies of the class token entering block
`recognition_start`, through the remaining CLIP blocks. Each extra token attends to
itself and to CLIP's patch tokens, the latter through its attention bias (per head,
max-pooled to the CLIP grid); CLIP's own tokens never see the extra ones, so they run
through the blocks unchanged. (The released code builds this as one masked attention
over [extra; class; patches] with -100 where attention is barred; this is the same
computation without the Q x Q part.) Outputs -> ln_post -> proj -> L2 norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from tapkit.models.clip.transformer import ResidualAttentionBlock
from tapkit.models.clip.vision import VisionTransformer


@dataclass
class ClipFeatures:
    """maps: CLIP layer -> (B, width, h, w) patch tokens (layer 0 the stem after ln_pre,
    l the output of block l); tokens (B, 1 + h*w, width) entering the recognition
    blocks; grid (h, w)."""

    maps: dict[int, torch.Tensor]
    tokens: torch.Tensor
    grid: tuple[int, int]


def clip_features(visual: VisionTransformer, images: torch.Tensor, layers: set[int], start: int,
                  antialias: bool = False) -> ClipFeatures:
    """images (B, 3, H, W) normalized, sides multiples of the CLIP patch. The positional
    embedding is resized bicubically, by default as SAN resizes it (not antialiased)."""
    x = visual.embed(images, antialias=antialias)
    grid = (images.shape[2] // visual.patch_size, images.shape[3] // visual.patch_size)

    def as_map(t: torch.Tensor) -> torch.Tensor:
        return t[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid)

    maps = {0: as_map(x)} if 0 in layers else {}
    for i, block in enumerate(visual.transformer.resblocks[:start], start=1):
        x = block(x)
        if i in layers:
            maps[i] = as_map(x)
    return ClipFeatures(maps, x, grid)


def biased_block(block: ResidualAttentionBlock, queries: torch.Tensor, patches: torch.Tensor,
                 bias: torch.Tensor) -> torch.Tensor:
    """One CLIP block for the extra tokens: queries (B, Q, D) attend to themselves and to
    patches (B, L, D) with bias (B, heads, Q, L) added to the patch logits."""
    attn = block.attn
    b, q_len, d = queries.shape
    heads = attn.heads
    q_in, kv_in = block.ln_1(queries), block.ln_1(patches)
    q, k_self, v_self = F.linear(q_in, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    k, v = F.linear(kv_in, attn.in_proj_weight[d:], attn.in_proj_bias[d:]).chunk(2, -1)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, -1, heads, d // heads).transpose(1, 2)

    q, k_self, v_self, k, v = map(split, (q, k_self, v_self, k, v))
    scale = (d // heads) ** -0.5
    logits = torch.cat([q @ k.transpose(-1, -2) * scale + bias, (q * k_self).sum(-1, keepdim=True) * scale], -1)
    weights = logits.softmax(-1)
    out = weights[..., :-1] @ v + weights[..., -1:] * v_self
    x = queries + attn.out_proj(out.transpose(1, 2).reshape(b, q_len, d))
    return x + block.mlp(block.ln_2(x))


def pool_bias(bias: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, heads, Q, h, w) side-grid bias -> (B, heads, Q, H*W) max-pooled to the CLIP grid."""
    b, n, q, h, w = bias.shape
    pooled = F.adaptive_max_pool2d(bias.reshape(b, n * q, h, w), grid)
    return pooled.reshape(b, n, q, grid[0] * grid[1])


def recognize(visual: VisionTransformer, start: int, features: ClipFeatures, bias: torch.Tensor) -> torch.Tensor:
    """bias (B, heads, Q, h, w) -> region embeddings (B, Q, embed_dim), L2-normalised."""
    attn_bias = pool_bias(bias, features.grid).to(features.tokens.dtype)
    x = features.tokens
    queries = x[:, :1].expand(-1, bias.shape[2], -1)
    blocks = visual.transformer.resblocks[start:]
    for i, block in enumerate(blocks):
        queries = biased_block(block, queries, x[:, 1:], attn_bias)
        if i < len(blocks) - 1:
            x = block(x)
    return F.normalize(visual.head(queries), dim=-1)
