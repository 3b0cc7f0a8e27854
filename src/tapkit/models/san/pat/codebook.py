"""One learnable codebook: nearest-code quantization with a straight-through gradient,
the codebook and commitment terms (or EMA code updates), dead-code restarts, and the
codebook's use (fraction of codes used, perplexity of the assignments).

The running state (EMA sums, usage) is held in buffers, so it is saved with the
weights and broadcast by DDP like any buffer; it changes only in training mode."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.san.pat.config import CodebookConfig


@dataclass
class Quantized:
    """quantized (B, D, h, w): the codes, with the straight-through gradient to the
    features; indices (B, h, w) long; loss: commitment (+ codebook term without EMA),
    a scalar; usage: fraction of codes used in this batch; perplexity: exp of the
    entropy of the batch's code histogram (num_codes when all are used evenly)."""

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    usage: float
    perplexity: float


def nearest_codes(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """z (N, D), codes (K, D) -> (N,) index of the nearest code in squared L2."""
    distances = z.pow(2).sum(1, keepdim=True) - 2 * z @ codes.t() + codes.pow(2).sum(1)[None]
    return distances.argmin(1)


def code_statistics(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, float, float]:
    """-> (counts (K,), fraction of codes used, perplexity)."""
    counts = torch.bincount(indices.flatten(), minlength=num_codes).float()
    p = counts / counts.sum().clamp(min=1)
    perplexity = float(torch.exp(-(p * p.clamp(min=1e-12).log()).sum()))
    return counts, float((counts > 0).float().mean()), perplexity


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: CodebookConfig):
        super().__init__()
        self.cfg = cfg
        k, d = cfg.num_codes, cfg.dim
        init = torch.randn(k, d)
        if cfg.ema:
            self.register_buffer("codes", init.clone())
            self.register_buffer("ema_sum", init.clone())
            self.register_buffer("ema_count", torch.ones(k))
        else:
            self.codes = nn.Parameter(init)
        self.register_buffer("usage_ema", torch.ones(k))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def forward(self, z: torch.Tensor) -> Quantized:
        """z (B, D, h, w) -> Quantized."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training:
            self._first_batch_init(flat.detach())
        indices = nearest_codes(flat.detach().float(), self.codes.detach().float())
        counts, usage, perplexity = code_statistics(indices, self.cfg.num_codes)
        if self.training:
            self._update(flat.detach().float(), indices, counts)
        chosen = F.embedding(indices, self.codes).to(flat.dtype)
        loss = self.cfg.beta * F.mse_loss(flat, chosen.detach())
        if not self.cfg.ema:
            loss = loss + F.mse_loss(chosen, flat.detach())
        quantized = flat + (chosen - flat).detach()
        return Quantized(quantized.view(b, h, w, d).permute(0, 3, 1, 2), indices.view(b, h, w), loss, usage, perplexity)

    @torch.no_grad()
    def _first_batch_init(self, flat: torch.Tensor) -> None:
        """The codes start on features of the first training batch (random codes far from
        the data would all be dead at once)."""
        if bool(self.initialized):
            return
        picks = flat[torch.randint(len(flat), (self.cfg.num_codes,), device=flat.device)].float()
        self._codes_data()[:] = picks
        if self.cfg.ema:
            self.ema_sum.copy_(picks)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    def _codes_data(self) -> torch.Tensor:
        return self.codes.data if isinstance(self.codes, nn.Parameter) else self.codes

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        cfg = self.cfg
        if cfg.ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, indices, flat)
            self.ema_count.mul_(cfg.decay).add_(counts, alpha=1 - cfg.decay)
            self.ema_sum.mul_(cfg.decay).add_(sums, alpha=1 - cfg.decay)
            self.codes.copy_(self.ema_sum / self.ema_count.clamp(min=1e-5)[:, None])
        self.usage_ema.mul_(cfg.decay).add_(counts, alpha=1 - cfg.decay)
        dead = self.usage_ema < cfg.dead_threshold
        if dead.any():
            self.restart(dead, flat)

    @torch.no_grad()
    def restart(self, dead: torch.Tensor, flat: torch.Tensor) -> None:
        """Moves the `dead` (K,) bool codes onto random features of `flat` (N, D)."""
        n = int(dead.sum())
        picks = flat[torch.randint(len(flat), (n,), device=flat.device)]
        self._codes_data()[dead] = picks.to(self.codes.dtype)
        if self.cfg.ema:
            self.ema_sum[dead] = picks
            self.ema_count[dead] = 1.0
        self.usage_ema[dead] = 1.0
