"""The predictor: one image embedding, any number of prompts.

`set_image` runs the image encoder once and keeps the result in an explicit
`ImageEmbedding`. `predict` decodes prompts in batches. Prompts are grouped by
their encoded length, so a batch of prompts of different lengths gives exactly
what each prompt gives alone (no padding tokens enter the attention)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from tapkit.errors import UserError
from tapkit.models.tap.model import TapModel
from tapkit.models.tap.prompt_encoder import BOX_TOP_LEFT
from tapkit.predictor.image import ResizeInfo, as_rgb_array, preprocess
from tapkit.predictor.prompts import Prompt, PromptError, encode_prompt
from tapkit.predictor.results import Region, mask_bbox

# The reference ranks masks by IoU plus this offset: +500 on mask 0 for box
# prompts, -500 on mask 0 for point prompts (so points pick from masks 1-3).
ROUTING_OFFSET = 1000.0


@dataclass
class ImageEmbedding:
    """The encoder's output for one image and how that image maps to the model input."""

    embedding: torch.Tensor  # (1, C, h, w)
    info: ResizeInfo


@dataclass
class DecodedPrompts:
    """Per prompt, for the selected mask: low-resolution logits (N, 4h, 4w), predicted
    IoU (N,), mask index (N,), semantic token (N, C) and concept embedding (N, D)."""

    mask_logits: torch.Tensor
    iou: torch.Tensor
    mask_index: torch.Tensor
    sem_tokens: torch.Tensor
    sem_embeds: torch.Tensor


def select_masks(iou: torch.Tensor, is_box: torch.Tensor) -> torch.Tensor:
    """The reference's routing: box prompts take mask 0, point prompts the best of the
    others by predicted IoU. iou: (N, M) float32; is_box: (N,) bool -> (N,) indices."""
    offset = torch.zeros_like(iou)
    offset[:, 0] = (is_box.to(iou.dtype) - 0.5) * ROUTING_OFFSET
    return (iou + offset).argmax(dim=1)


class Predictor:
    def __init__(self, model: TapModel, max_batch: int = 64):
        self.model = model
        self.max_batch = max_batch
        self.image: ImageEmbedding | None = None

    @torch.inference_mode()
    def embed_image(self, image) -> ImageEmbedding:
        """Runs the encoder on an RGB image (array, PIL image or path) without keeping it."""
        rgb = as_rgb_array(image)
        padded, info = preprocess(rgb, self.model.image_size)
        embedding = self.model.encode_image(torch.from_numpy(padded).unsqueeze(0))
        return ImageEmbedding(embedding, info)

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
        return [encode_prompt(p if isinstance(p, Prompt) else Prompt.from_dict(p), w, h) for p in prompts]

    @torch.inference_mode()
    def decode_points(self, points: np.ndarray) -> DecodedPrompts:
        """Decodes prompts of equal length: points (N, P, 3) [x, y, label] in original pixels."""
        assert self.image is not None
        xy = points[:, :, :2] * np.float32(self.image.info.scale)
        labels = points[:, :, 2].astype(np.int64)
        out = self.model.decode(self.image.embedding, torch.from_numpy(xy), torch.from_numpy(labels))
        is_box = torch.from_numpy(labels[:, 0] == BOX_TOP_LEFT).to(out.iou.device)
        index = select_masks(out.iou, is_box)
        rows = torch.arange(len(index), device=index.device)
        return DecodedPrompts(
            mask_logits=out.mask_logits[rows, index],
            iou=out.iou[rows, index],
            mask_index=index,
            sem_tokens=out.sem_tokens[rows, index],
            sem_embeds=out.sem_embeds[rows, index],
        )

    def upscale_masks(self, logits: torch.Tensor) -> np.ndarray:
        """(N, 4h, 4w) low-resolution logits -> (N, H, W) bool masks at the original size:
        upscale to the padded input, crop the image, upscale to the original, threshold at 0."""
        assert self.image is not None
        size = self.model.image_size
        (rh, rw), (oh, ow) = self.image.info.resized_size, self.image.info.original_size
        x = F.interpolate(logits.unsqueeze(1), (size, size), mode="bilinear", align_corners=False)
        x = F.interpolate(x[..., :rh, :rw], (oh, ow), mode="bilinear", align_corners=False)
        return x[:, 0].gt(0).cpu().numpy()

    @torch.inference_mode()
    def caption(self, sem_tokens: torch.Tensor) -> list[str]:
        """Greedy captions for selected semantic tokens (N, C)."""
        decoder, tokenizer = self.model.text_decoder, self.model.tokenizer
        if decoder is None or tokenizer is None:
            return [None] * sem_tokens.shape[0]
        ids = decoder.generate(sem_tokens.unsqueeze(1), tokenizer.bos_id, tokenizer.eos_id)
        return [tokenizer.decode(seq) for seq in ids]

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
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                points = np.stack([encoded[i] for i in chunk])
                for i, region in zip(chunk, self._regions(points, top_k, captions, embeddings)):
                    regions[i] = region
        return regions  # type: ignore[return-value]

    def _regions(self, points: np.ndarray, top_k: int, captions: bool, embeddings: bool) -> list[Region]:
        decoded = self.decode_points(points)
        masks = self.upscale_masks(decoded.mask_logits)
        n = len(points)
        names: list[list[tuple[str, float]]] = [[] for _ in range(n)]
        vocab = self.model.concepts
        if vocab is not None and top_k > 0:
            top = vocab.top_k(decoded.sem_embeds, top_k)
            for i, (idx, prob) in enumerate(zip(top.indices.tolist(), top.probs.tolist())):
                names[i] = [(vocab.names[j], float(p)) for j, p in zip(idx, prob)]
        texts = self.caption(decoded.sem_tokens) if captions else [None] * n
        iou = decoded.iou.tolist()
        mask_index = decoded.mask_index.tolist()
        embeds = decoded.sem_embeds.float().cpu().numpy() if embeddings else [None] * n
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
