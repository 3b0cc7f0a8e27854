"""SAM's ViT image encoder (ViTDet style): windowed attention blocks, a few
global-attention blocks, decomposed relative positions, and a conv neck.

The arithmetic is the official implementation's, computed faster: attention goes through
`scaled_dot_product_attention` with the decomposed relative positions as one 4-D additive
mask, the projections skip the windows' padding tokens (a padding token's q/k/v is the
qkv bias exactly), and activations and residual adds are in place without grad. The
embedding agrees with the official one to float rounding (docs/inference.md)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.sam.config import SamEncoderConfig


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an (N, C, H, W) map, written out as the official
    code does it (mean, biased variance, eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        if torch.is_grad_enabled():
            s = (x - u).pow(2).mean(1, keepdim=True)
            x = (x - u) / torch.sqrt(s + self.eps)
            return self.weight[:, None, None] * x + self.bias[:, None, None]
        # The same operations, reusing one buffer (the decoder's maps are large).
        centred = x - u
        s = centred.pow(2).mean(1, keepdim=True)
        return centred.div_(torch.sqrt(s + self.eps)).mul_(self.weight[:, None, None]).add_(self.bias[:, None, None])


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or type(self.act) is not nn.GELU or self.act.approximate != "none":
            return self.lin2(self.act(self.lin1(x)))
        return self.lin2(torch.ops.aten.gelu_(self.lin1(x)))


def padded_size(h: int, w: int, window: int) -> tuple[int, int]:
    return h + (window - h % window) % window, w + (window - w % window) % window


def _real_areas(grid: torch.Tensor, x: torch.Tensor, window: int):
    """Pairs of views (windows buffer part, map part) covering the (B, H, W, C) map `x`:
    the whole windows, then the ragged last column, row and corner. `grid` is the windows
    buffer seen as the padded map, (B, nh, window, nw, window, C)."""
    b, h, w, c = x.shape
    fh, fw = h // window, w // window
    rh, rw = h - fh * window, w - fw * window
    yield grid[:, :fh, :, :fw], x[:, : fh * window, : fw * window].reshape(b, fh, window, fw, window, c)
    if rw:
        yield grid[:, :fh, :, fw, :rw], x[:, : fh * window, fw * window :].reshape(b, fh, window, rw, c)
    if rh:
        yield grid[:, fh, :rh, :fw], x[:, fh * window :, : fw * window].reshape(b, rh, fw, window, c)
    if rh and rw:
        yield grid[:, fh, :rh, fw, :rw], x[:, fh * window :, fw * window :]


def window_partition(x: torch.Tensor, window: int, fill: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWindows, window * window, C), windows row-major, padding H
    and W up to multiples of the window with `fill` (a (C,) vector; default zeros, as the
    official code). Also returns the padded (Hp, Wp). The map is copied once, straight
    into the windows buffer, and only the padding is filled."""
    b, h, w, c = x.shape
    hp, wp = padded_size(h, w, window)
    windows = x.new_empty((b, hp // window, wp // window, window, window, c))
    grid = windows.permute(0, 1, 3, 2, 4, 5)
    for part, source in _real_areas(grid, x, window):
        part.copy_(source)
    value = 0.0 if fill is None else fill.to(x.dtype)
    fh, fw = h // window, w // window
    if h % window:
        grid[:, fh, h % window :] = value
    if w % window:
        grid[:, :, :, fw, w % window :] = value
    return windows.view(-1, window * window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition`, dropping the padding (one copy): -> (B, H, W, C)."""
    (hp, wp), (h, w) = padded, size
    nh, nw = hp // window, wp // window
    c = windows.shape[-1]
    grid = windows.view(-1, nh, nw, window, window, c).permute(0, 1, 3, 2, 4, 5)
    out = windows.new_empty((grid.shape[0], h, w, c))
    for part, target in _real_areas(grid, out, window):
        target.copy_(part)
    return out


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """The relative-position embeddings for every (query, key) pair along one axis,
    (q_size, k_size, C). A table of another length than 2 * max(q, k) - 1 is resized
    by linear interpolation first; when q and k differ in length, the shorter side's
    coordinates are stretched to the longer one's."""
    max_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_dist:
        resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_dist, mode="linear")
        rel_pos = resized.reshape(-1, max_dist).permute(1, 0)
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def decomposed_rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, q_size: tuple[int, int], k_size: tuple[int, int]
) -> torch.Tensor:
    """MViTv2's decomposed relative positions as one additive attention mask: for each
    query, <q, R_h[dy]> over key rows plus <q, R_w[dx]> over key columns.
    q: (B, heads, qh*qw, C) (unscaled, as the official code) -> (B, heads, qh*qw, kh*kw),
    built in one broadcast add."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h).to(q.dtype)
    rw = get_rel_pos(q_w, k_w, rel_pos_w).to(q.dtype)
    r_q = q.unflatten(2, (q_h, q_w))
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh).contiguous()  # small; contiguous so the
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw).contiguous()  # large sum below is too
    bias = rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)
    return bias.view(q.shape[0], q.shape[1], q_h * q_w, k_h * k_w)


class Attention(nn.Module):
    """Multi-head self-attention with decomposed relative positions sized for
    `input_size` (the window, or the whole grid). `qkv` and `proj` are per-token, so the
    block applies them outside the windows (on real tokens only) and calls `attend`."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, use_rel_pos: bool, input_size: tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def attend(self, qkv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """qkv: (B, h*w, 3 * dim) projected tokens of B maps of `size` -> (B, h*w, dim)
        attention outputs (before `proj`)."""
        b, length, three_dim = qkv.shape
        q, k, v = qkv.view(b, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        mask = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, size, size) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return out.transpose(1, 2).reshape(b, length, three_dim // 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, dim) -> (B, H, W, dim), attention over the whole map."""
        b, h, w, c = x.shape
        return self.proj(self.attend(self.qkv(x).view(b, h * w, 3 * c), (h, w)).view(b, h, w, c))


class Block(nn.Module):
    """Pre-norm transformer block; `window_size` 0 means global attention."""

    def __init__(self, cfg: SamEncoderConfig, window_size: int):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        input_size = (window_size, window_size) if window_size > 0 else (cfg.grid, cfg.grid)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.use_rel_pos, input_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * cfg.mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            # The official code pads the normed map with zeros and projects every window
            # token; a zero token's q/k/v is the qkv bias exactly, so the real tokens are
            # projected and the padding is filled with the bias (and dropped before `proj`).
            b, h, w, c = x.shape
            window = self.window_size
            windows, padded = window_partition(self.attn.qkv(x), window, self.attn.qkv.bias)
            x = window_unpartition(self.attn.attend(windows, (window, window)), window, padded, (h, w))
            x = self.attn.proj(x)
        else:
            x = self.attn(x)
        if torch.is_grad_enabled():
            x = shortcut + x
            return x + self.mlp(self.norm2(x))
        x = x.add_(shortcut)
        return self.mlp(self.norm2(x)).add_(x)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H/p, W/p, C)."""
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    def __init__(self, cfg: SamEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.img_size = cfg.image_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid, cfg.grid, cfg.embed_dim)) if cfg.use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(cfg, 0 if i in cfg.global_attn_indexes else cfg.window_size) for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_dim, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_dim),
            nn.Conv2d(cfg.out_dim, cfg.out_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalized, padded image -> (B, out_dim, S/p, S/p) embedding."""
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
