"""The typed interface of a promptable model (TAP, SAM, SCA), for family-neutral code:
the predictor, automatic mode, the server and evaluation name `PromptableModel`, never
a family's class, and ask capabilities (`can_name`, `can_caption`) instead of looking
for attributes.

A family that is not promptable (open-vocabulary semantic segmentation: image + class
names -> label map) gets its own interface and front door next to the predictor; the
registry (`models/families.py`) does not assume either."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from tapkit.models.outputs import DecoderOutput
from tapkit.models.protocol import InferenceProtocol
from tapkit.models.tap.concepts import ConceptVocabulary


class EncoderConfig(Protocol):
    """What reports say about an image encoder (TAP's, SAM's, an SCA's backbone's)."""

    depth: int
    embed_dim: int
    image_size: int


@runtime_checkable
class PromptableModel(Protocol):
    """What `tapkit.load_model` returns for a promptable family.

    encode_image: the batch `protocol.preprocess` gives -> (1, C, h, w) image embedding.
    decode: image embedding, xy (N, P, 2) float32 in the model input frame, labels
      (N, P) int64 -> every mask of the N prompts (`DecoderOutput`).
    caption: semantic tokens (N, ...) -> N captions (None without a captioner)."""

    family: str
    protocol: InferenceProtocol
    concepts: ConceptVocabulary | None  # the vocabulary regions are named on
    text_decoder: torch.nn.Module | None
    # Automatic-mode settings the checkpoint ships (EverythingConfig field -> value; {}:
    # none, SAM's defaults apply). `tapkit.load_model` fills it from the file.
    everything_defaults: dict

    @property
    def image_size(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def can_name(self) -> bool:
        """Regions get concept names (a concept head and a vocabulary)."""

    @property
    def can_caption(self) -> bool:
        """Regions get captions (a text decoder and its tokenizer)."""

    @property
    def max_caption_tokens(self) -> int | None:
        """The longest caption the text decoder writes (None without one)."""

    @property
    def encoder_config(self) -> EncoderConfig: ...

    def encode_image(self, batch: torch.Tensor) -> torch.Tensor: ...

    def decode(self, image_embed: torch.Tensor, xy: torch.Tensor, labels: torch.Tensor) -> DecoderOutput: ...

    def caption(self, sem_tokens: torch.Tensor) -> list[str | None]: ...

    def set_max_caption_tokens(self, n: int) -> None:
        """Caps captions at n tokens (EOS included); ValueError when n does not fit."""
