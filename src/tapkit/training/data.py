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
    """images (B, S, S, 3) uint8 BGR; boxes (N, 4) x1, y1, x2, y2 in the model frame;
    tokens (N, T) [BOS, text, EOS] padded with pad_id; image_index (N,)."""

    images: torch.Tensor
    boxes: torch.Tensor
    tokens: torch.Tensor
    image_index: torch.Tensor
    seed: int


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

    def images_for(self, step: int):
        """Yields (slot, record, rgb) for this rank's images of `step`; unreadable images
        are skipped (and counted) by moving on to the next record in the order."""
        n = len(self.records)
        position = (step * self.world + self.rank) * self.batch
        found, tries = 0, 0
        while found < self.batch:
            pos = position + tries
            tries += 1
            record = self.records[epoch_order(n, self.seed, pos // n)[pos % n]]
            rgb = load_rgb(record.path, self.skips)
            if rgb is not None:
                yield found, record, rgb
                found += 1
            elif tries > 50 * self.batch:
                raise RuntimeError(f"too many unreadable images ({self.skips.examples})")

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
    def __init__(self, records, image_size, batch_images, seed, rank, world_size, prompts_per_image,
                 tokenizer: TextTokenizer, max_tokens: int):
        super().__init__(records, image_size, batch_images, seed, rank, world_size, prompts_per_image)
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def __getitem__(self, step: int) -> CaptionBatch:
        images, boxes, seqs, index = [], [], [], []
        for slot, record, rgb in self.images_for(step):
            rng = step_rng(self.seed, step, self.rank, slot + 1)
            canvas, scale, (h, w) = self.frame(rgb)
            images.append(canvas)
            regions = [r for r in record.regions if r.caption]
            for k in rng.permutation(len(regions))[: self.per_image]:
                x, y, bw, bh = regions[k].bbox
                box = np.array([x, y, x + bw - 1, y + bh - 1], np.float32) * scale
                box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
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
            images=torch.from_numpy(np.stack(images)),
            boxes=torch.from_numpy(np.stack(boxes)) if boxes else torch.zeros(0, 4),
            tokens=torch.from_numpy(tokens),
            image_index=torch.tensor(index, dtype=torch.long),
            seed=int(step_rng(self.seed, step, self.rank).integers(2**31)),
        )
