"""Step-indexed training batches: the batch of rank r at step s is a pure function
of (seed, s, r), so a resumed run sees exactly the batches an uninterrupted one would.

Images are resized and padded to the model frame (as at inference); masks and
boxes are mapped into that frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from tapkit.data.records import ImageRecord, SkipCounter, load_rgb
from tapkit.data.semantic import SemanticTargets
from tapkit.models.tap.tokenizer import TextTokenizer
from tapkit.models.tap.protocol import preprocess
from tapkit.training.embedding_cache import EmbeddingCache

MIN_MASK_PIXELS = 16


@dataclass
class SegmentBatch:
    """images (B, S, S, 3) uint8 BGR; masks (N, S, S) bool; image_index (N,) which image
    each mask is in; concept_target (N, C) float32 (rows of zeros where has_concept is False)."""

    images: torch.Tensor
    masks: torch.Tensor
    image_index: torch.Tensor
    concept_target: torch.Tensor
    has_concept: torch.Tensor
    seed: int


@dataclass
class CaptionBatch:
    """images (B, S, S, 3) uint8 BGR, or (0, S, S, 3) when `embeds` (B, C, h, w) holds
    the images' cached embeddings instead; boxes (N, 4) x1, y1, x2, y2 in the model
    frame; tokens (N, T) [BOS, text, EOS] padded with pad_id; image_index (N,);
    neighbour_boxes (N, 4) the box of the nearest other captioned region by box centre
    (NaN where the region is alone in its image)."""

    images: torch.Tensor
    boxes: torch.Tensor
    tokens: torch.Tensor
    image_index: torch.Tensor
    seed: int
    embeds: torch.Tensor | None = None
    neighbour_boxes: torch.Tensor | None = None


def step_rng(seed: int, step: int, rank: int, slot: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, rank, slot])


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, 7919, epoch]).permutation(n)


class StepBatches(torch.utils.data.Dataset):
    """Base: picks the images of (step, rank); subclasses turn them into a batch."""

    def __init__(self, records: list[ImageRecord], image_size: int, batch_images: int, seed: int, rank: int, world_size: int,
                 prompts_per_image: int):
        self.records, self.size, self.batch, self.seed = records, image_size, batch_images, seed
        self.rank, self.world, self.per_image = rank, world_size, prompts_per_image
        self.skips = SkipCounter()

    def __len__(self) -> int:
        return 2**62

    def picks_for(self, step: int, usable):
        """Yields (slot, record index, value) for this rank's images of `step`, where
        value = usable(index) is not None; unusable images are skipped by moving on to
        the next record in the order."""
        n = len(self.records)
        position = (step * self.world + self.rank) * self.batch
        found, tries = 0, 0
        while found < self.batch:
            pos = position + tries
            tries += 1
            index = int(epoch_order(n, self.seed, pos // n)[pos % n])
            value = usable(index)
            if value is not None:
                yield found, index, value
                found += 1
            elif tries > 50 * self.batch:
                raise RuntimeError(f"too many unreadable images ({self.skips.examples})")

    def images_for(self, step: int):
        """Yields (slot, record, rgb) for this rank's images of `step`; unreadable images
        are skipped (and counted)."""
        for slot, index, rgb in self.picks_for(step, lambda i: load_rgb(self.records[i].path, self.skips)):
            yield slot, self.records[index], rgb

    def frame(self, rgb: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
        canvas, info = preprocess(rgb, self.size)
        return canvas, info.scale, info.resized_size

    def mask_to_frame(self, mask: np.ndarray, resized: tuple[int, int]) -> np.ndarray:
        h, w = resized
        if mask.shape != (h, w):
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)) >= 128
        out = np.zeros((self.size, self.size), bool)
        out[:h, :w] = mask
        return out


class SegmentBatches(StepBatches):
    def __init__(self, records, image_size, batch_images, seed, rank, world_size, prompts_per_image,
                 semantic: SemanticTargets | None, num_concepts: int):
        super().__init__(records, image_size, batch_images, seed, rank, world_size, prompts_per_image)
        self.semantic, self.num_concepts = semantic, num_concepts

    def __getitem__(self, step: int) -> SegmentBatch:
        images, masks, index, targets, has = [], [], [], [], []
        for slot, record, rgb in self.images_for(step):
            rng = step_rng(self.seed, step, self.rank, slot + 1)
            canvas, _, resized = self.frame(rgb)
            images.append(canvas)
            order = rng.permutation(len(record.regions))
            taken = 0
            for k in order:
                if taken == self.per_image:
                    break
                region = record.regions[k]
                if region.segmentation is None:
                    continue
                mask = self.mask_to_frame(region.mask(rgb.shape[0], rgb.shape[1]), resized)
                if mask.sum() < MIN_MASK_PIXELS:
                    continue
                target = np.zeros(self.num_concepts, np.float32)
                found = self.semantic.get(record.image_id, region.id) if self.semantic is not None else None
                if found is not None:
                    target[found.index] = found.prob
                masks.append(mask)
                index.append(slot)
                targets.append(target)
                has.append(found is not None)
                taken += 1
        return SegmentBatch(
            images=torch.from_numpy(np.stack(images)),
            masks=torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, self.size, self.size, dtype=torch.bool),
            image_index=torch.tensor(index, dtype=torch.long),
            concept_target=torch.from_numpy(np.stack(targets)) if targets else torch.zeros(0, self.num_concepts),
            has_concept=torch.tensor(has, dtype=torch.bool),
            seed=int(step_rng(self.seed, step, self.rank).integers(2**31)),
        )


class CaptionBatches(StepBatches):
    """With an `EmbeddingCache` (the encoder frozen) a batch carries the images' cached
    embeddings instead of their pixels: the same regions, boxes and tokens."""

    def __init__(self, records, image_size, batch_images, seed, rank, world_size, prompts_per_image,
                 tokenizer: TextTokenizer, max_tokens: int, cache: EmbeddingCache | None = None):
        super().__init__(records, image_size, batch_images, seed, rank, world_size, prompts_per_image)
        self.tokenizer, self.max_tokens, self.cache = tokenizer, max_tokens, cache
        if cache is not None:
            self.skips = cache.skips

    def _framed(self, step: int):
        """Yields (slot, record index, canvas or None when cached, scale, (h, w)) for the
        images of `step`."""
        if self.cache is None:
            for slot, index, rgb in self.picks_for(step, lambda i: load_rgb(self.records[i].path, self.skips)):
                canvas, scale, resized = self.frame(rgb)
                yield slot, index, canvas, scale, resized
            return
        cache = self.cache
        for slot, index, (scale, resized) in self.picks_for(step, lambda i: cache.frame(i) if cache.has(i) else None):
            yield slot, index, None, scale, resized

    def __getitem__(self, step: int) -> CaptionBatch:
        images, cached, boxes, neighbours, seqs, index = [], [], [], [], [], []
        for slot, record_index, canvas, scale, (h, w) in self._framed(step):
            rng = step_rng(self.seed, step, self.rank, slot + 1)
            record = self.records[record_index]
            if canvas is None:
                cached.append(record_index)
            else:
                images.append(canvas)
            regions = [r for r in record.regions if r.caption]
            framed = np.clip(np.array([[x, y, x + bw - 1, y + bh - 1] for x, y, bw, bh in (r.bbox for r in regions)],
                                      np.float32).reshape(-1, 4) * scale, 0, [w - 1, h - 1, w - 1, h - 1])
            for k in rng.permutation(len(regions))[: self.per_image]:
                box = framed[k]
                neighbours.append(nearest_other(framed, k))
                ids = self.tokenizer.encode(regions[k].caption)
                if len(ids) > self.max_tokens:
                    ids = ids[: self.max_tokens - 1] + [self.tokenizer.eos_id]
                boxes.append(box)
                seqs.append(ids)
                index.append(slot)
        length = max((len(s) for s in seqs), default=2)
        tokens = np.full((len(seqs), length), self.tokenizer.pad_id, np.int64)
        for i, s in enumerate(seqs):
            tokens[i, : len(s)] = s
        return CaptionBatch(
            images=torch.from_numpy(np.stack(images)) if images else torch.zeros(0, self.size, self.size, 3, dtype=torch.uint8),
            boxes=torch.from_numpy(np.stack(boxes)) if boxes else torch.zeros(0, 4),
            tokens=torch.from_numpy(tokens),
            image_index=torch.tensor(index, dtype=torch.long),
            seed=int(step_rng(self.seed, step, self.rank).integers(2**31)),
            embeds=self.cache.gather(cached) if cached else None,
            neighbour_boxes=torch.from_numpy(np.stack(neighbours)) if neighbours else torch.zeros(0, 4),
        )


def nearest_other(boxes: np.ndarray, k: int) -> np.ndarray:
    """The box (4,) among `boxes` (M, 4) whose centre is nearest box k's (the first of
    equals), NaN if there is no other."""
    if len(boxes) < 2:
        return np.full(4, np.nan, np.float32)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = ((centres - centres[k]) ** 2).sum(1)
    distance[k] = np.inf
    return boxes[int(np.argmin(distance))]
