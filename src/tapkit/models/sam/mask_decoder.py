"""SAM's mask decoder: [IoU token, mask tokens, prompt tokens] run through the
two-way transformer with the image embedding; each mask token gives a mask through
a hypernetwork MLP applied to the upscaled image embedding, and the IoU token
predicts each mask's quality. Mask 0 is the single-mask output; masks 1..3 are the
multimask (ambiguity-aware) outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.inplace import upscale_embedding
from tapkit.models.sam.config import SamDecoderConfig
from tapkit.models.sam.image_encoder import LayerNorm2d
from tapkit.models.sam.transformer import TwoWayState, TwoWayTransformer


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


@dataclass
class MaskDecoding:
    """masks: (N, M, 4h, 4w) low-resolution logits; iou: (N, M) predicted quality;
    tokens: (N, T, C) the transformer's input tokens; state: its output (tokens and
    updated image keys), which the SCA text feature mixer reads."""

    masks: torch.Tensor
    iou: torch.Tensor
    tokens: torch.Tensor
    state: TwoWayState


class MaskDecoder(nn.Module):
    def __init__(self, cfg: SamDecoderConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.cfg = cfg
        self.transformer = TwoWayTransformer(cfg.depth, dim, cfg.num_heads, cfg.mlp_dim, cfg.attention_downsample_rate, cfg.norm_eps)
        self.iou_token = nn.Embedding(1, dim)
        self.num_mask_tokens = cfg.num_mask_tokens
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> MaskDecoding:
        """image: (1 or N, C, h, w) embedding; image_pe: (1, h * w, C); sparse: (N, P, C)
        prompt tokens; dense: (1 or N, C, h or 1, w or 1) dense prompt embedding."""
        n = sparse.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(n, -1, -1), sparse), dim=1)
        src = image + dense
        b, c, h, w = src.shape
        state = self.transformer(src.flatten(2).permute(0, 2, 1), image_pe, tokens)
        iou_token_out = state.tokens[:, 0, :]
        mask_tokens_out = state.tokens[:, 1 : 1 + self.num_mask_tokens, :]
        upscaled = upscale_embedding(self.output_upscaling, state.keys.transpose(1, 2).view(n, c, h, w))
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, c, uh, uw = upscaled.shape
        masks = (hyper_in @ upscaled.view(n, c, uh * uw)).view(n, -1, uh, uw)
        return MaskDecoding(masks, self.iou_prediction_head(iou_token_out), tokens, state)
