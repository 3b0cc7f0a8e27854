"""The TAP model: image encoder, prompt encoder, image decoder and (optionally)
the text decoder, plus the tokenizer and concept vocabulary it uses."""

from __future__ import annotations

import torch
from torch import nn

from tapkit.models.tap.concepts import ConceptVocabulary
from tapkit.models.tap.config import PIXEL_MEAN_BGR, PIXEL_STD_BGR, TapConfig
from tapkit.models.outputs import PromptedState
from tapkit.models.tap.image_decoder import DecoderOutput, ImageDecoder
from tapkit.models.tap.image_encoder import ImageEncoder
from tapkit.models.tap.prompt_encoder import PromptEncoder
from tapkit.models.tap.protocol import TapProtocol
from tapkit.models.tap.text_decoder import TextDecoder
from tapkit.models.tap.tokenizer import TextTokenizer


# Tensors of the official state dict that are derived, not learned.
DERIVED_KEYS = ("pixel_mean", "pixel_rsig")
# The image normalization (BGR mean and reciprocal std), stored in official checkpoints.
PIXEL_STATISTICS = ("pixel_mean", "pixel_rsig")
DERIVED_SUFFIXES = (".rel_pos_embed.index", ".num_batches_tracked")


def is_derived_key(name: str) -> bool:
    return name in DERIVED_KEYS or name.endswith(DERIVED_SUFFIXES)


class TapModel(nn.Module):
    family = "tap"
    protocol = TapProtocol()

    def __init__(
        self,
        cfg: TapConfig,
        tokenizer: TextTokenizer | None = None,
        concepts: ConceptVocabulary | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        enc = cfg.image_encoder
        self.image_encoder = ImageEncoder(enc)
        self.prompt_encoder = PromptEncoder(enc.out_dim, enc.image_size)
        self.image_decoder = ImageDecoder(cfg.image_decoder)
        self.text_decoder = TextDecoder(cfg.text_decoder) if cfg.text_decoder else None
        self.tokenizer = tokenizer
        self.concepts = concepts
        self.caption_limit: int | None = None  # None: the reference's limit
        # Automatic-mode settings shipped with the weights (EverythingConfig field -> value).
        self.everything_defaults: dict = {}
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN_BGR), persistent=False)
        self.register_buffer("pixel_rsig", torch.tensor(PIXEL_STD_BGR).reciprocal(), persistent=False)

    @property
    def image_size(self) -> int:
        return self.cfg.image_encoder.image_size

    @property
    def can_name(self) -> bool:
        return self.concepts is not None

    @property
    def can_caption(self) -> bool:
        return self.text_decoder is not None and self.tokenizer is not None

    @property
    def max_caption_tokens(self) -> int | None:
        """Tokens a caption may have (EOS included): the reference's 38 (positions 1..38 of
        its 39-slot buffer) unless `set_max_caption_tokens` lowered it."""
        if self.text_decoder is None:
            return None
        return self.caption_limit if self.caption_limit is not None else self.text_decoder.max_text_len - 1

    def set_max_caption_tokens(self, n: int) -> None:
        if self.text_decoder is None:
            raise ValueError("this TAP checkpoint has no text decoder: it writes no captions")
        most = self.text_decoder.max_text_len - 1
        if not 1 <= n <= most:
            raise ValueError(f"captions of this TAP can have 1 to {most} tokens (its text decoder's length), not {n}")
        self.caption_limit = n

    @property
    def encoder_config(self):
        return self.cfg.image_encoder

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pixel_mean.dtype

    def normalize(self, images_bgr: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 BGR -> (B, 3, S, S) normalized, in the model dtype
        (the reference normalizes in the model dtype too)."""
        x = images_bgr.to(device=self.device, dtype=self.dtype)
        return x.sub(self.pixel_mean).mul(self.pixel_rsig).permute(0, 3, 1, 2)

    def encode_image(self, images_bgr: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 padded BGR -> image embedding (B, C, S/16, S/16)."""
        return self.image_encoder(self.normalize(images_bgr))

    def decode(self, image_embed: torch.Tensor, xy: torch.Tensor, labels: torch.Tensor) -> DecoderOutput:
        """Decodes N prompts of P points each against one image embedding (1, C, h, w).

        xy: (N, P, 2) pixel coordinates in the resized (model-input) frame; labels: (N, P)."""
        h, w = image_embed.shape[-2:]
        tokens = self.prompt_encoder(xy.to(self.device), labels.to(self.device))
        image_pos = self.prompt_encoder.dense_positions(h, w)
        return self.image_decoder(image_embed, image_pos, tokens)

    def decode_with_state(self, image_embed: torch.Tensor, xy: torch.Tensor, labels: torch.Tensor) -> PromptedState:
        """`decode`, plus the decoder transformer's tokens and image keys (for an SCA mixer)."""
        h, w = image_embed.shape[-2:]
        tokens = self.prompt_encoder(xy.to(self.device), labels.to(self.device))
        image_pos = self.prompt_encoder.dense_positions(h, w)
        out = self.image_decoder.decode_with_state(image_embed, image_pos, tokens)
        return PromptedState(out.output, out.state_tokens, out.state_keys, image_pos.unsqueeze(0))

    @torch.inference_mode()
    def caption(self, sem_tokens: torch.Tensor) -> list[str | None]:
        """Greedy captions for selected semantic tokens (N, C); None without a text decoder."""
        if self.text_decoder is None or self.tokenizer is None:
            return [None] * sem_tokens.shape[0]
        ids = self.text_decoder.generate(sem_tokens.unsqueeze(1), self.tokenizer.bos_id, self.tokenizer.eos_id, self.max_caption_tokens)
        return [self.tokenizer.decode(seq) for seq in ids]

    def set_pixel_statistics(self, pixel_mean: torch.Tensor | None = None, pixel_rsig: torch.Tensor | None = None) -> None:
        """Normalizes with a checkpoint's stored statistics (BGR), as the reference's
        load_state_dict does; the padding fill stays the default mean, as there."""
        with torch.no_grad():
            for buffer, value in ((self.pixel_mean, pixel_mean), (self.pixel_rsig, pixel_rsig)):
                if value is not None:
                    buffer.copy_(value.reshape(buffer.shape))

    def custom_pixel_statistics(self) -> dict[str, torch.Tensor]:
        """`pixel_mean` / `pixel_rsig` where they differ from the defaults (shape-only
        meta buffers count as defaults)."""
        defaults = {"pixel_mean": torch.tensor(PIXEL_MEAN_BGR), "pixel_rsig": torch.tensor(PIXEL_STD_BGR).reciprocal()}
        return {
            name: getattr(self, name)
            for name, default in defaults.items()
            if not getattr(self, name).is_meta and not torch.equal(getattr(self, name).detach().float().cpu(), default)
        }

    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in the official naming, without derived tensors; with the pixel
        statistics when a checkpoint set other ones than the defaults (so they survive
        `convert` and saving)."""
        state = {k: v for k, v in self.state_dict().items() if not is_derived_key(k)}
        state.update(self.custom_pixel_statistics())
        return state
