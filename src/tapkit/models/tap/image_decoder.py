"""Image decoder: a two-way transformer between prompt tokens and the image
embedding, then heads for masks, mask quality (IoU) and region semantics.

Query layout per prompt: 4 semantic tokens [S], 1 IoU token, 4 mask tokens,
then the prompt's sparse tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.outputs import DecoderOutput
from tapkit.models.inplace import upscale_embedding
from tapkit.models.tap.config import ImageDecoderConfig


class Attention(nn.Module):
    """Multi-head attention with an optional down-projected inner width."""

    def __init__(self, dim: int, num_heads: int, inner_dim: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = inner_dim // num_heads
        self.q_proj = nn.Linear(dim, inner_dim)
        self.k_proj = nn.Linear(dim, inner_dim)
        self.v_proj = nn.Linear(dim, inner_dim)
        self.proj = nn.Linear(inner_dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Inputs may have batch size 1 where they are shared by all prompts: they are
        projected once and broadcast, which is what makes large prompt batches cheap."""
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        n = max(q.shape[0], k.shape[0], v.shape[0])
        q, k, v = (t.expand(n, -1, -1, -1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).flatten(2))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image, MLP, image->token. The first block
    does not add positions to the queries of its self-attention (and has no
    residual there), as in SAM."""

    def __init__(self, cfg: ImageDecoderConfig, first: bool):
        super().__init__()
        dim = cfg.embed_dim
        self.first = first
        self.dropout = nn.Dropout(0.1)
        self.self_attn = Attention(dim, cfg.num_heads, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, cfg.num_heads, cfg.cross_attn_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, cfg.mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, cfg.num_heads, cfg.cross_attn_dim)
        self.norm4 = nn.LayerNorm(dim)

    def forward(self, query, key, query_pos, key_pos):
        if self.first:
            query = self.norm1(self.self_attn(query, query, query))
        else:
            q = query + query_pos
            query = self.norm1(self.dropout(self.self_attn(q, q, query)) + query)
        q, k = query + query_pos, key + key_pos
        query = self.norm2(self.dropout(self.cross_attn_token_to_image(q, k, key)) + query)
        query = self.norm3(self.dropout(self.mlp(query)) + query)
        update = self.cross_attn_image_to_token(k, query + query_pos, query)
        key = self.norm4(update.add_(key) if not torch.is_grad_enabled() else update + key)
        return query, key


class TwoWayTransformer(nn.Module):
    def __init__(self, cfg: ImageDecoderConfig):
        super().__init__()
        self.blocks = nn.ModuleList(TwoWayBlock(cfg, first=i == 0) for i in range(cfg.depth))
        self.final_attn_token_to_image = Attention(cfg.embed_dim, cfg.num_heads, cfg.cross_attn_dim)
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.dropout = nn.Dropout(0.1)

    def forward(self, query, key, key_pos):
        """query: (N, T, C) tokens (also their positions); key: (1 or N, HW, C), the image
        embedding, shared by all prompts when its batch size is 1; key_pos: (HW, C).
        Until the first image update the image side is the same for every prompt, so
        its projections run once for the whole batch."""
        return self.final(*self.run_blocks(query, key, key_pos), key_pos, query)

    def run_blocks(self, query, key, key_pos):
        """The two-way blocks: (tokens entering the final attention, updated image keys)."""
        query_pos = query
        for block in self.blocks:
            query, key = block(query, key, query_pos, key_pos)
        return query, key

    def final(self, query, key, key_pos, query_pos):
        """The final token -> image attention: (tokens, image keys); query_pos is the
        transformer's input tokens."""
        q, k = query + query_pos, key + key_pos
        query = self.norm(self.dropout(self.final_attn_token_to_image(q, k, key)) + query)
        return query, key

    def final_attention_logits(self, query, key, key_pos, query_pos) -> torch.Tensor:
        """Pre-softmax weights of the final token -> image attention of one token per
        prompt: query, query_pos (N, C); key (N, HW, C); returns (N, heads, HW)."""
        attn = self.final_attn_token_to_image
        q = attn.q_proj(query + query_pos).view(query.shape[0], attn.num_heads, attn.head_dim)
        k = attn.k_proj(key + key_pos).view(key.shape[0], key.shape[1], attn.num_heads, attn.head_dim)
        return torch.einsum("nhd,nkhd->nhk", q, k) * attn.head_dim**-0.5


class MLPHead(nn.Module):
    """`depth` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, depth: int = 3):
        super().__init__()
        hidden = hidden or in_dim
        dims = [in_dim] + [hidden] * (depth - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ImageDecoder(nn.Module):
    def __init__(self, cfg: ImageDecoderConfig):
        super().__init__()
        dim, m = cfg.embed_dim, cfg.num_mask_tokens
        self.cfg = cfg
        self.transformer = TwoWayTransformer(cfg)
        self.iou_token = nn.Embedding(1, dim)
        self.sem_tokens = nn.Embedding(m, dim)
        self.mask_tokens = nn.Embedding(m, dim)
        self.output_conv = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, 2),
            ChannelLayerNorm(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, 2),
            nn.GELU(),
        )
        self.mask_pred = nn.ModuleList(MLPHead(dim, dim // 8) for _ in range(m))
        self.iou_pred = MLPHead(dim, m)
        self.sem_pred = MLPHead(dim, cfg.sem_embed_dim, cfg.sem_embed_dim)

    def forward(self, image_embed: torch.Tensor, image_pos: torch.Tensor, prompt_tokens: torch.Tensor) -> DecoderOutput:
        """image_embed: (1, C, h, w) or (N, C, h, w); image_pos: (h * w, C); prompt_tokens: (N, P, C)."""
        return self.decode_with_state(image_embed, image_pos, prompt_tokens).output

    def decode_with_state(self, image_embed: torch.Tensor, image_pos: torch.Tensor, prompt_tokens: torch.Tensor) -> "TapDecoding":
        """Like `forward`, also returning the transformer's input tokens and its output
        (tokens and updated image keys), which an SCA text feature mixer reads."""
        n, m = prompt_tokens.shape[0], self.cfg.num_mask_tokens
        _, c, h, w = image_embed.shape
        learned = torch.cat([self.sem_tokens.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([learned.unsqueeze(0).expand(n, -1, -1), prompt_tokens], dim=1)
        key = image_embed.flatten(2).transpose(1, 2)
        block_tokens, block_keys = self.transformer.run_blocks(tokens, key, image_pos)
        query, key = self.transformer.final(block_tokens, block_keys, image_pos, tokens)
        # The reference's view of the (N, HW, C) keys as an (N, C, h, w) map (channels-last
        # strides), so the convolutions take it without a copy and use the same kernels.
        upscaled = upscale_embedding(self.output_conv, key.transpose(1, 2).view(-1, c, h, w))
        # (N, C/8, 4h * 4w) as a strided view of the channels-last output (no copy).
        upscaled = upscaled.permute(0, 2, 3, 1).reshape(n, 16 * h * w, -1).transpose(1, 2)
        sem_tokens = query[:, :m]
        iou_token = query[:, m]
        mask_tokens = query[:, m + 1 : 2 * m + 1]
        hyper = torch.stack([head(mask_tokens[:, i]) for i, head in enumerate(self.mask_pred)], dim=1)
        mask_logits = (hyper @ upscaled).view(n, m, 4 * h, 4 * w)
        output = DecoderOutput(
            mask_logits=mask_logits,
            iou=self.iou_pred(iou_token).float(),
            sem_tokens=sem_tokens,
            sem_embeds=self.sem_pred(sem_tokens),
        )
        return TapDecoding(output, tokens, query, key, block_tokens)


@dataclass
class TapDecoding:
    """The decoder's output plus its transformer's input `tokens` (N, T, C), output
    `state_tokens` (N, T, C), updated image keys `state_keys` (N, HW, C) and the tokens
    entering its final attention, `block_tokens` (N, T, C)."""

    output: DecoderOutput
    tokens: torch.Tensor
    state_tokens: torch.Tensor
    state_keys: torch.Tensor
    block_tokens: torch.Tensor
