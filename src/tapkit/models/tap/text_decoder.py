"""Causal text decoder with rotary position embedding and an explicit KV cache.

Sequence layout: [projected semantic token, BOS, text tokens...]. Pure PyTorch
(scaled_dot_product_attention), so captions work on any device and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.tap.config import TextDecoderConfig


def rotary_tables(seq_len: int, head_dim: int, dtype: torch.dtype, device=None, theta: float = 10000.0):
    """cos and sin tables, (seq_len, head_dim / 2), rounded to `dtype` as the reference does."""
    positions = torch.arange(seq_len, dtype=torch.float32).unsqueeze(-1)
    inv_freq = torch.pow(theta, torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim).reciprocal()
    angles = positions * inv_freq.unsqueeze(0)
    return angles.cos().to(device, dtype), angles.sin().to(device, dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates interleaved pairs (x[..., 2i], x[..., 2i+1]) of x: (B, L, ..., D) by
    per-position angles given as cos/sin (L, D/2). Computed in float32 (as flash-attn's
    kernel does), returned in x's dtype."""
    shape = (cos.shape[0],) + (1,) * (x.ndim - 3) + (cos.shape[1],)
    c, s = cos.float().view(shape), sin.float().view(shape)
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)
    return out.to(x.dtype)


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of sequences being decoded, and the
    rotary tables of every position.

    keys/values: (layers, B, H, max_len, D); `length` positions are filled;
    cos/sin: (max_len, D/2) in the cache's dtype."""

    keys: torch.Tensor
    values: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, cfg: TextDecoderConfig, batch: int, dtype: torch.dtype, device) -> "KVCache":
        head_dim = cfg.embed_dim // cfg.num_heads
        shape = (cfg.depth, batch, cfg.num_heads, cfg.max_seq_len, head_dim)
        cos, sin = rotary_tables(cfg.max_seq_len, head_dim, dtype, device)
        zeros = torch.zeros(shape, dtype=dtype, device=device)
        return cls(zeros, torch.zeros_like(zeros), cos, sin)

    def select(self, rows: torch.Tensor) -> "KVCache":
        """Keeps only the given batch rows (finished sequences are dropped)."""
        return KVCache(self.keys[:, rows], self.values[:, rows], self.cos, self.sin, self.length)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, cos, sin, layer: int, cache: KVCache | None) -> torch.Tensor:
        b, length, _ = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim)
        q, k = apply_rotary(qkv[:, :, :2], cos, sin).unbind(2)  # q and k in one pass
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        dropout = self.dropout.p if self.training else 0.0
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            start, end = cache.length, cache.length + length
            cache.keys[layer, :, :, start:end] = k
            cache.values[layer, :, :, start:end] = v
            k, v = cache.keys[layer, :, :, :end], cache.values[layer, :, :, :end]
            # A single new token sees every cached position; a longer chunk is causal
            # and starts the cache, so its mask is the plain lower triangle.
            assert length == 1 or start == 0
            out = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1)
        return self.proj(out.transpose(1, 2).flatten(2))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int):
        super().__init__()
        self.attn = Attention(dim, num_heads)
        self.mlp = MLP(dim, mlp_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, cos, sin, layer: int, cache: KVCache | None) -> torch.Tensor:
        x = self.dropout(self.attn(self.norm1(x), cos, sin, layer, cache)) + x
        return self.dropout(self.mlp(self.norm2(x))) + x


class Transformer(nn.Module):
    def __init__(self, cfg: TextDecoderConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        mlp_dim = cfg.embed_dim * cfg.mlp_ratio
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, cfg.num_heads, mlp_dim) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.embed_dim, cfg.vocab_size, bias=False)


class TextDecoder(nn.Module):
    def __init__(self, cfg: TextDecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.Linear(cfg.prompt_embed_dim, cfg.embed_dim, bias=False)
        self.transformer = Transformer(cfg)

    @property
    def max_text_len(self) -> int:
        return self.cfg.max_seq_len - 1

    def _run(self, x: torch.Tensor, start: int, cache: KVCache | None) -> torch.Tensor:
        if cache is None:
            cos, sin = rotary_tables(self.cfg.max_seq_len, self.cfg.embed_dim // self.cfg.num_heads, x.dtype, x.device)
        else:
            cos, sin = cache.cos, cache.sin
        cos, sin = cos[start : start + x.shape[1]], sin[start : start + x.shape[1]]
        for i, block in enumerate(self.transformer.blocks):
            x = block(x, cos, sin, i, cache)
        if cache is not None:
            cache.length += x.shape[1]
        return x

    def forward(self, prompts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits. prompts: (B, P, prompt_dim) semantic tokens;
        tokens: (B, T) starting with BOS. Returns float32 logits (B, T, vocab):
        position t predicts token t + 1."""
        return self.teacher_forced(prompts, tokens)[0]

    def teacher_forced(self, prompts: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward`'s logits (B, T, vocab), and the logits (B, P, vocab) at the prompts'
        own positions, which decoding never reads (training may give them a task)."""
        x = torch.cat([self.encoder(prompts), self.transformer.tok_embeddings(tokens)], dim=1)
        logits = self.transformer.text_proj(self.transformer.norm(self._run(x, 0, None))).float()
        return logits[:, prompts.shape[1] :], logits[:, : prompts.shape[1]]

    def prefill(self, prompts: torch.Tensor, bos: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Starts decoding: consumes [prompts, BOS], returns the next-token logits (B, vocab)."""
        x = torch.cat([self.encoder(prompts), self.transformer.tok_embeddings(bos)], dim=1)
        x = self._run(x, 0, cache)
        return self.transformer.text_proj(self.transformer.norm(x[:, -1])).float()

    def step(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Consumes one token per sequence, (B, 1); returns next-token logits (B, vocab)."""
        x = self._run(self.transformer.tok_embeddings(tokens), cache.length, cache)
        return self.transformer.text_proj(self.transformer.norm(x[:, -1])).float()

    @torch.inference_mode()
    def generate(self, prompts: torch.Tensor, bos_id: int, eos_id: int, max_new_tokens: int | None = None) -> list[list[int]]:
        """Greedy decoding. prompts: (B, P, prompt_dim). Returns, per sequence, the
        generated ids without BOS, cut before the first EOS. The reference decodes
        positions 1 .. max_seq_len - 2, i.e. at most max_seq_len - 2 new tokens."""
        limit = self.max_text_len - 1 if max_new_tokens is None else max_new_tokens
        b, device = prompts.shape[0], prompts.device
        cache = KVCache.empty(self.cfg, b, self.encoder.weight.dtype, device)
        bos = torch.full((b, 1), bos_id, dtype=torch.long, device=device)
        outputs: list[list[int]] = [[] for _ in range(b)]
        if limit <= 0 or b == 0:
            return outputs
        active = torch.arange(b, device=device)
        logits = self.prefill(prompts, bos, cache)
        for step in range(limit):
            next_tokens = logits.argmax(-1)
            for row, token in zip(active.tolist(), next_tokens.tolist()):
                if token != eos_id:
                    outputs[row].append(token)
            alive = next_tokens.ne(eos_id)
            if step == limit - 1 or not bool(alive.any()):
                break
            if not bool(alive.all()):
                keep = alive.nonzero().squeeze(1)
                active, next_tokens, cache = active[keep], next_tokens[keep], cache.select(keep)
            logits = self.step(next_tokens.unsqueeze(1), cache)
        return outputs
