"""The predictor: one image embedding, any number of prompts, any model family.

`set_image` runs the image encoder once and keeps the result in an explicit
`ImageEmbedding`. `predict` decodes prompts in batches. Prompts are grouped by
their encoded length, so a batch of prompts of different lengths gives exactly
what each prompt gives alone (no padding tokens enter the attention).

What differs between families (TAP, SAM, SCA) - preprocessing, prompt order and
coordinate frame, which mask answers a prompt - is the model's `protocol`; names
come from `model.concepts`, captions from `model.caption`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from tapkit.errors import UserError
from tapkit.inputs.image import ResizeInfo, as_rgb_array
from tapkit.inputs.prompts import Prompt, PromptError
from tapkit.models.interface import PromptableModel
from tapkit.models.outputs import DecoderOutput
from tapkit.predictor.results import Region, mask_bbox

__all__ = ["MASK_THRESHOLD", "DecodedPrompts", "ImageEmbedding", "Predictor", "upscale_logits"]


# Logits above this are inside a mask (SAM's mask_threshold; TAP's reference uses 0 too).
MASK_THRESHOLD = 0.0


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def upscale_logits(logits: torch.Tensor, info: ResizeInfo, image_size: int) -> torch.Tensor:
    """(N, 4h, 4w) low-resolution logits -> (N, H, W) logits at the original size: upscaled
    (bilinear) to the padded model input, cropped to the resized image, upscaled to the
    original size (SAM's postprocess_masks; TAP's reference does the same).

    Only the low-resolution rows and columns that reach the resized image are upscaled
    (padding is never computed): with a factor f, output row y reads input rows
    floor((y + 0.5) / f - 0.5) and the next, so rows up to ceil(rh / f) suffice, and
    upscaling that crop by the same factor gives the same sampling positions and weights.
    With f a power of two (4 for TAP and SAM) the values are bit-identical (tested); other
    factors changed the last bit in PyTorch's kernel, so they take the whole square."""
    (rh, rw), (oh, ow) = info.resized_size, info.original_size
    lh, lw = logits.shape[-2:]
    fh, fw = image_size // lh, image_size // lw
    if (fh * lh, fw * lw) == (image_size, image_size) and _power_of_two(fh) and _power_of_two(fw):
        mh, mw = min(lh, -(-rh // fh) + 1), min(lw, -(-rw // fw) + 1)
        x = F.interpolate(logits[:, None, :mh, :mw], (mh * fh, mw * fw), mode="bilinear", align_corners=False)
    else:
        x = F.interpolate(logits.unsqueeze(1), (image_size, image_size), mode="bilinear", align_corners=False)
    x = x[..., :rh, :rw]
    if (rh, rw) == (oh, ow):  # an image already at model scale: the second resize is the identity
        return x[:, 0]
    return F.interpolate(x, (oh, ow), mode="bilinear", align_corners=False)[:, 0]


@dataclass
class ImageEmbedding:
    """The encoder's output for one image and how that image maps to the model input."""

    embedding: torch.Tensor  # (1, C, h, w)
    info: ResizeInfo


@dataclass
class DecodedPrompts:
    """Per prompt, for the selected mask: low-resolution logits (N, 4h, 4w), predicted
    IoU (N,), mask index (N,), semantic token (N, ...) and concept embedding (N, D);
    D is 0 for families without a concept head."""

    mask_logits: torch.Tensor
    iou: torch.Tensor
    mask_index: torch.Tensor
    sem_tokens: torch.Tensor
    sem_embeds: torch.Tensor


class Predictor:
    def __init__(self, model: PromptableModel, max_batch: int = 64):
        """model: any family's model from `tapkit.load_model` (TAP, SAM or SCA;
        `tapkit.load_model()` gives the packaged default model)."""
        if not isinstance(model, PromptableModel):
            raise TypeError(f"Predictor needs a promptable model (TAP, SAM or SCA) from tapkit.load_model(), "
                            f"got {type(model).__name__}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self.image: ImageEmbedding | None = None

    @torch.inference_mode()
    def embed_image(self, image) -> ImageEmbedding:
        """Runs the encoder on an RGB image (array, PIL image or path) without keeping it."""
        rgb = as_rgb_array(image)
        batch, info = self.model.protocol.preprocess(rgb, self.model.image_size)
        return ImageEmbedding(self.model.encode_image(batch), info)

    def set_image(self, image) -> ImageEmbedding:
        self.image = self.embed_image(image)
        return self.image

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Reuses an embedding computed earlier (e.g. from a cache)."""
        self.image = embedding

    def encode_prompts(self, prompts: Sequence[Prompt]) -> list[np.ndarray]:
        if self.image is None:
            raise UserError("call set_image before predict")
        if len(prompts) == 0:
            raise PromptError("no prompts given")
        h, w = self.image.info.original_size
        protocol = self.model.protocol
        return [protocol.prompt_points(p if isinstance(p, Prompt) else Prompt.from_dict(p), w, h) for p in prompts]

    @torch.inference_mode()
    def decode_all(self, points: np.ndarray) -> tuple[DecoderOutput, torch.Tensor]:
        """Decodes prompts of equal length, points (N, P, 3) [x, y, label] in original
        pixels, in the model input frame the family's protocol sets. Returns every mask
        of every prompt (N, M, ...) and the labels (N, P) as the model saw them."""
        assert self.image is not None
        xy, labels = self.model.protocol.input_frame(points, self.image.info)
        return self.model.decode(self.image.embedding, xy, labels), labels

    @torch.inference_mode()
    def decode_points(self, points: np.ndarray) -> DecodedPrompts:
        """`decode_all`, then the mask the family's protocol routes each prompt to."""
        out, labels = self.decode_all(points)
        index = self.model.protocol.select_masks(out.iou, labels.to(out.iou.device))
        rows = torch.arange(len(index), device=index.device)
        return DecodedPrompts(
            mask_logits=out.mask_logits[rows, index],
            iou=out.iou[rows, index],
            mask_index=index,
            sem_tokens=out.sem_tokens[rows, index],
            sem_embeds=out.sem_embeds[rows, index],
        )

    def upscale_masks(self, logits: torch.Tensor) -> np.ndarray:
        """(N, 4h, 4w) low-resolution logits -> (N, H, W) bool masks at the original size."""
        assert self.image is not None
        return upscale_logits(logits, self.image.info, self.model.image_size).gt(MASK_THRESHOLD).cpu().numpy()

    @torch.inference_mode()
    def caption(self, sem_tokens: torch.Tensor) -> list[str]:
        """Captions for selected semantic tokens (N, ...), None where the model has no captioner."""
        return self.model.caption(sem_tokens)

    @torch.inference_mode()
    def predict(
        self,
        prompts: Sequence[Prompt],
        top_k: int = 5,
        captions: bool = True,
        embeddings: bool = True,
    ) -> list[Region]:
        """One `Region` per prompt, in order."""
        encoded = self.encode_prompts(prompts)
        groups: dict[int, list[int]] = defaultdict(list)
        for i, points in enumerate(encoded):
            groups[len(points)].append(i)
        regions: list[Region | None] = [None] * len(encoded)
        for indices in groups.values():
            step = min(self.max_batch, self.model.protocol.exact_batch or self.max_batch)
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                points = np.stack([encoded[i] for i in chunk])
                for i, region in zip(chunk, self._regions(points, top_k, captions, embeddings)):
                    regions[i] = region
        return regions  # type: ignore[return-value]

    def _regions(self, points: np.ndarray, top_k: int, captions: bool, embeddings: bool) -> list[Region]:
        decoded = self.decode_points(points)
        masks = self.upscale_masks(decoded.mask_logits)
        n = len(points)
        can_name = self.model.can_name and top_k > 0
        names = self.model.concepts.top_names(decoded.sem_embeds, top_k) if can_name else [[] for _ in range(n)]
        texts = self.caption(decoded.sem_tokens) if captions and self.model.can_caption else [None] * n
        iou = decoded.iou.tolist()
        mask_index = decoded.mask_index.tolist()
        has_embeds = embeddings and decoded.sem_embeds.shape[-1] > 0
        embeds = decoded.sem_embeds.float().cpu().numpy() if has_embeds else [None] * n
        return [
            Region(
                prompt_points=points[i],
                mask=masks[i],
                bbox=mask_bbox(masks[i]),
                area=int(masks[i].sum()),
                score=float(iou[i]),
                mask_index=int(mask_index[i]),
                concept=names[i][0][0] if names[i] else None,
                concept_score=names[i][0][1] if names[i] else None,
                concepts=names[i],
                caption=texts[i],
                embedding=embeds[i],
            )
            for i in range(n)
        ]
