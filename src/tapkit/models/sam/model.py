"""Segment Anything (SAM): image encoder, prompt encoder and mask decoder, with the
official state-dict naming, so the released sam_vit_{b,l,h} checkpoints load as they are.

SAM segments only: its regions have no concept and no caption (`concepts` is None,
`caption` gives None), and its `sem_tokens` / `sem_embeds` have zero width."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.outputs import DecoderOutput, PromptedState
from tapkit.models.sam.config import PIXEL_MEAN_RGB, PIXEL_STD_RGB, SamConfig
from tapkit.models.sam.image_encoder import ImageEncoderViT
from tapkit.models.sam.mask_decoder import MaskDecoder
from tapkit.models.sam.prompt_encoder import PromptEncoder
from tapkit.models.sam.protocol import SamProtocol

# Tensors some SAM state dicts carry that are constants, not weights.
DERIVED_KEYS = ("pixel_mean", "pixel_std")


class SamModel(nn.Module):
    family = "sam"
    protocol = SamProtocol()
    mask_threshold = 0.0

    def __init__(self, cfg: SamConfig):
        super().__init__()
        self.cfg = cfg
        enc, dec = cfg.encoder, cfg.decoder
        self.image_encoder = ImageEncoderViT(enc)
        self.prompt_encoder = PromptEncoder(dec.embed_dim, enc.grid, enc.image_size, dec.mask_in_chans)
        self.mask_decoder = MaskDecoder(dec)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN_RGB).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD_RGB).view(-1, 1, 1), persistent=False)
        # No concept head, no captioner (the attributes every family has).
        self.concepts = None
        self.tokenizer = None
        self.text_decoder = None
        self.everything_defaults: dict = {}

    @property
    def image_size(self) -> int:
        return self.cfg.encoder.image_size

    can_name = False
    can_caption = False
    max_caption_tokens = None

    @property
    def encoder_config(self):
        return self.cfg.encoder

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pixel_mean.dtype

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) uint8 RGB with max(h, w) <= image_size -> (B, 3, S, S) normalized
        and zero-padded bottom/right, in the model dtype (as Sam.preprocess)."""
        x = (images.to(device=self.device, dtype=self.dtype) - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.image_size - w, 0, self.image_size - h))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) uint8 resized RGB -> image embedding (B, C, S/16, S/16)."""
        return self.image_encoder(self.normalize(images))

    def decode_with_state(
        self, image_embed: torch.Tensor, xy: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None = None
    ) -> PromptedState:
        """All masks of N prompts against one image embedding (1, C, h, w), with the
        decoder's transformer state.

        xy: (N, P, 2) float32 pixels of the model input frame; labels: (N, P) in
        tapkit's convention; mask_input: optional (N, 1, 4h, 4w) low-resolution logits."""
        sparse = self.prompt_encoder.embed_points(xy.to(self.device), labels.to(self.device))
        dense = self.prompt_encoder.embed_masks(None if mask_input is None else mask_input.to(self.device))
        image_pe = self.prompt_encoder.dense_pe()
        out = self.mask_decoder(image_embed, image_pe, sparse, dense)
        n, m = out.iou.shape
        empty = out.iou.new_zeros((n, m, 0))
        output = DecoderOutput(mask_logits=out.masks, iou=out.iou.float(), sem_tokens=empty, sem_embeds=empty)
        return PromptedState(output, out.state.tokens, out.state.keys, image_pe)

    def decode(self, image_embed: torch.Tensor, xy: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None = None) -> DecoderOutput:
        return self.decode_with_state(image_embed, xy, labels, mask_input).output

    def caption(self, sem_tokens: torch.Tensor) -> list[str | None]:
        return [None] * sem_tokens.shape[0]

    def set_max_caption_tokens(self, n: int) -> None:
        raise ValueError("SAM writes no captions")

    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in the official naming."""
        return dict(self.state_dict())
