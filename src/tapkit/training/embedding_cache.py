"""Image embeddings computed once for a stage whose image encoder is frozen
(`cache_embeddings: true`): each training image is read, framed and encoded a single
time, and every later step gathers rows of this table instead of decoding JPEGs and
running the encoder again. Nothing geometric may change between steps (the images
are only resized and padded, as at inference), so a cached step sees exactly the
embedding an uncached one computes.

The cache is an explicit object handed to the batches, not state on the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from tapkit.data.records import ImageRecord, SkipCounter, load_rgb
from tapkit.models.tap.protocol import preprocess


@dataclass
class EmbeddingCache:
    """embeds (M, C, h, w) in the encoder's dtype, on the CPU; row[i] is record i's row
    (-1: the image could not be read); scale (M,) and resized (M, 2) its frame."""

    embeds: torch.Tensor
    row: np.ndarray
    scale: np.ndarray
    resized: np.ndarray
    skips: SkipCounter

    def has(self, record_index: int) -> bool:
        return bool(self.row[record_index] >= 0)

    def frame(self, record_index: int) -> tuple[float, tuple[int, int]]:
        """(scale, (h, w)) of the record's image in the model frame."""
        r = self.row[record_index]
        return float(self.scale[r]), (int(self.resized[r, 0]), int(self.resized[r, 1]))

    def gather(self, record_indices: list[int]) -> torch.Tensor:
        """(B, C, h, w) embeddings of these records (each must be cached)."""
        return self.embeds[torch.as_tensor(self.row[record_indices], dtype=torch.long)]


@torch.no_grad()
def build_embedding_cache(records: list[ImageRecord], model, image_size: int, batch: int = 16,
                          progress: bool = True) -> EmbeddingCache:
    """Encodes every readable image of `records` with `model.encode_image` (in eval mode:
    the encoder is frozen). Unreadable images are counted and left out."""
    skips = SkipCounter()
    was_training = model.image_encoder.training
    model.image_encoder.eval()
    rows = np.full(len(records), -1, np.int64)
    scales, sizes, chunks, pending = [], [], [], []

    def flush():
        if pending:
            chunks.append(model.encode_image(torch.from_numpy(np.stack(pending))).cpu())
            pending.clear()

    for i, record in enumerate(tqdm(records, desc="caching image embeddings", disable=not progress, unit="img")):
        rgb = load_rgb(record.path, skips)
        if rgb is None:
            continue
        canvas, info = preprocess(rgb, image_size)
        rows[i] = len(scales)
        scales.append(info.scale)
        sizes.append(info.resized_size)
        pending.append(canvas)
        if len(pending) == batch:
            flush()
    flush()
    model.image_encoder.train(was_training)
    if not chunks:
        raise RuntimeError(f"no readable training image to cache ({skips.examples})")
    return EmbeddingCache(torch.cat(chunks), rows, np.array(scales, np.float64), np.array(sizes, np.int64).reshape(-1, 2),
                          skips)
