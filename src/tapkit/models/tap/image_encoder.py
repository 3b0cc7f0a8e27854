"""ViT image encoder of TAP: windowed attention with relative position bias,
convolutional bottlenecks that mix windows, and a one-level feature-pyramid neck.

The windows tile the patch grid; every quarter of the depth the tokens go back
to a feature map, pass a residual conv bottleneck (which is what lets windows
talk to each other) and are cut into windows again.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.tap.config import ImageEncoderConfig


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/window * W/window, window * window, C), windows row-major."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_unpartition(x: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nH * nW, window * window, C) -> (B, H, W, C)."""
    c = x.shape[-1]
    nh, nw = height // window, width // window
    x = x.reshape(-1, nh, nw, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) index into a (2 * window - 1)^2 table of relative offsets."""
    grid = torch.arange(window)
    coords = torch.stack(torch.meshgrid(grid, grid, indexing="ij")).reshape(2, -1)
    offsets = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return offsets[0] * (2 * window - 1) + offsets[1]


class RelativePositionBias(nn.Module):
    """A learned per-head bias for every relative offset inside a window."""

    def __init__(self, num_heads: int, window: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_heads, (2 * window - 1) ** 2))
        self.register_buffer("index", relative_position_index(window), persistent=False)

    def forward(self) -> torch.Tensor:
        """Returns the additive attention bias, (1, num_heads, window^2, window^2): 4-D, so
        that `scaled_dot_product_attention` broadcasts it over the windows in its fused
        kernel (a 3-D mask sends it to the unfused math path, 3x slower here)."""
        return self.weight[:, self.index].unsqueeze(0)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_embed = RelativePositionBias(num_heads, window)

    def forward(self, x: torch.Tensor, workspace: torch.Tensor | None = None) -> torch.Tensor:
        """x: (num_windows, window^2, dim). `workspace`: an optional (num_windows * window^2,
        3 * dim) buffer for the q/k/v projection, reused across blocks (a fresh tensor
        this large costs page faults on every call)."""
        n, length, dim = x.shape
        flat = x.reshape(n * length, dim)
        if workspace is None:
            qkv = F.linear(flat, self.qkv.weight, self.qkv.bias)
        else:
            qkv = torch.addmm(self.qkv.bias, flat, self.qkv.weight.t(), out=workspace)
        # Strided q, k, v views: the fused kernel reads them in place, and writes its
        # output as (windows, tokens, heads, head_dim), so the flatten below is a view.
        q, k, v = qkv.view(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.rel_pos_embed())
        return self.proj(out.transpose(1, 2).flatten(2))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, workspace: torch.Tensor | None = None) -> torch.Tensor:
        """`workspace`: an optional (tokens, hidden) buffer for the hidden activations."""
        if workspace is None:
            return self.fc2(F.gelu(self.fc1(x)))
        hidden = torch.addmm(self.fc1.bias, x.reshape(-1, x.shape[-1]), self.fc1.weight.t(), out=workspace)
        return self.fc2(torch.ops.aten.gelu_(hidden)).view(x.shape)


class Workspace:
    """Buffers the encoder blocks reuse for their two largest activations (q/k/v and
    the MLP's hidden layer), allocated once per forward pass."""

    def __init__(self, tokens: int, dim: int, mlp_dim: int, like: torch.Tensor):
        self.qkv = like.new_empty((tokens, 3 * dim))
        self.hidden = like.new_empty((tokens, mlp_dim))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, window: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim)

    def forward(self, x: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """Residual adds in place, as the reference (`x` is overwritten without grad)."""
        inplace = workspace is not None and not torch.is_grad_enabled()
        attn = self.attn(self.norm1(x), workspace.qkv if inplace else None)
        x = attn.add_(x) if inplace else attn + x
        mlp = self.mlp(self.norm2(x), workspace.hidden if inplace else None)
        return mlp.add_(x) if inplace else mlp + x


class Bottleneck(nn.Module):
    """Residual 1x1 -> 3x3 -> 1x1 conv block with batch norm; mixes neighbouring windows."""

    def __init__(self, dim: int):
        super().__init__()
        width = dim // 2
        self.conv1 = nn.Conv2d(dim, width, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, dim, 1, bias=False)
        self.norm3 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, dim, H, W). Without grad, activations and the residual add are in place."""
        if torch.is_grad_enabled():
            y = F.gelu(self.norm1(self.conv1(x)))
            y = F.gelu(self.norm2(self.conv2(y)))
            return self.norm3(self.conv3(y)) + x
        y = torch.ops.aten.gelu_(self.norm1(self.conv1(x)))
        y = torch.ops.aten.gelu_(self.norm2(self.conv2(y)))
        return self.norm3(self.conv3(y)).add_(x)


class Neck(nn.Module):
    """The single stride-16 level of the simple feature pyramid: 1x1 conv + BN, 3x3 conv + BN.

    Parameter names follow the official checkpoint (`lateral_conv.0`, `output_conv.0`)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.lateral_conv = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(dim, out_dim, 1, bias=False), nn.BatchNorm2d(out_dim))]
        )
        self.output_conv = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False), nn.BatchNorm2d(out_dim))]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_conv[0](self.lateral_conv[0](x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, S/p, S/p, dim)."""
        return self.proj(x).permute(0, 2, 3, 1)


class PosEmbed(nn.Module):
    def __init__(self, dim: int, num_patches: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_patches, dim))
        nn.init.normal_(self.weight, std=0.02)


class ImageEncoder(nn.Module):
    """(B, 3, image_size, image_size) normalized BGR -> (B, out_dim, S/16, S/16) embedding."""

    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        grid = cfg.image_size // cfg.patch_size
        assert grid % cfg.window_size == 0, "the patch grid must be a whole number of windows"
        assert cfg.depth % 4 == 0, "cross-window bottlenecks sit after every quarter of the depth"
        self.patch_embed = PatchEmbed(cfg.embed_dim, cfg.patch_size)
        self.pos_embed = PosEmbed(cfg.embed_dim, grid * grid)
        mlp_dim = cfg.embed_dim * cfg.mlp_ratio
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, mlp_dim, cfg.window_size) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.cross_conv = nn.ModuleList(Bottleneck(cfg.embed_dim) for _ in range(4))
        self.neck = Neck(cfg.embed_dim, cfg.out_dim)
        quarter = cfg.depth // 4
        self.cross_after = tuple(range(quarter - 1, cfg.depth, quarter))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        b, h, w, c = x.shape
        x = x + self.pos_embed.weight.view(1, h, w, c)
        window = self.cfg.window_size
        x = window_partition(x, window)
        last = len(self.blocks) - 1
        workspace = None
        if not torch.is_grad_enabled():
            workspace = Workspace(x.shape[0] * x.shape[1], c, self.blocks[0].mlp.fc1.out_features, x)
        for i, block in enumerate(self.blocks):
            x = block(x, workspace)
            if i not in self.cross_after:
                continue
            if i == last:
                x = self.norm(x)
            fmap = window_unpartition(x, window, h, w).permute(0, 3, 1, 2)
            fmap = self.cross_conv[self.cross_after.index(i)](fmap.contiguous())
            if i == last:
                return self.neck(fmap)
            x = window_partition(fmap.permute(0, 2, 3, 1), window)
        raise AssertionError("the last block is always followed by a bottleneck")
