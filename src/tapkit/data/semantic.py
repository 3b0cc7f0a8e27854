"""SemanticSA-1B: for every mask, a teacher image embedding of the masked crop and
the concept-distribution target (softmax of its similarity to the concept text
embeddings), stored as top-k in .npz shards. Images are split across ranks
(index % world_size == rank) so a cluster can process all of SA-1B."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.nn import functional as F

from tapkit.data.crops import EVAL_MARGIN, square_crop
from tapkit.data.records import ImageRecord, Region, SkipCounter, load_rgb
from tapkit.data.text_encoders import HashText
from tapkit.errors import UserError
from tapkit.utils.atomic import write_with


class RegionTeacher(Protocol):
    dim: int

    def embed(self, rgb: np.ndarray | None, record: ImageRecord) -> tuple[list[Region], torch.Tensor]:
        """Returns the regions it embedded and their (M, dim) embeddings."""


@dataclass
class StandInTeacher:
    """The synthetic world's teacher: a region's 'image embedding' is the text
    embedding of its concept name (plus a little seeded noise), so the target is a
    smoothed distribution over the world's concepts. Needs `region.concept`."""

    text: HashText
    noise: float = 0.05
    needs_pixels = False

    @property
    def dim(self) -> int:
        return self.text.dim

    def embed(self, rgb, record):
        regions = [r for r in record.regions if r.concept]
        if not regions:
            return [], torch.zeros(0, self.dim)
        emb = self.text.encode([r.concept for r in regions])
        gen = torch.Generator().manual_seed(hash_int(f"{record.image_id}"))
        emb = emb + self.noise * torch.randn(emb.shape, generator=gen)
        return regions, F.normalize(emb, dim=-1)


def hash_int(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "little")


class ClipTeacher:
    """CLIP image embedding of each region: a square crop around its box
    (`tapkit.data.crops.square_crop`, the view tapkit's CLIP is trained and measured on),
    through the CLIP's own preprocessing."""

    needs_pixels = True

    def __init__(self, clip, margin: float = EVAL_MARGIN):
        self.clip, self.margin = clip, margin
        self.dim = clip.embed_dim

    def embed(self, rgb, record):
        regions = [r for r in record.regions if r.bbox[2] >= 1 and r.bbox[3] >= 1]
        if not regions:
            return [], torch.zeros(0, self.dim)
        crops = [np.ascontiguousarray(square_crop(rgb, r.bbox, self.margin)) for r in regions]
        return regions, self.clip.encode_image(crops).cpu()


def concept_targets(embeds: torch.Tensor, weights: torch.Tensor, temperature: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of softmax(temperature * cos(embedding, concept)) per region.

    embeds: (M, D); weights: (D, N) concept columns (any scale). Returns indices
    (M, k) int32 and probabilities (M, k) float32, renormalized to sum to 1."""
    sims = F.normalize(embeds.float(), dim=-1) @ F.normalize(weights.float(), dim=0)
    probs = (sims * temperature).softmax(-1)
    top = probs.topk(min(k, probs.shape[1]), dim=-1)
    values = top.values / top.values.sum(-1, keepdim=True)
    return top.indices.numpy().astype(np.int32), values.numpy().astype(np.float32)


@dataclass
class SemanticSummary:
    images: int
    regions: int
    shards: list[Path]
    skips: SkipCounter


def build_semantic(
    records: list[ImageRecord],
    teacher,
    weights: torch.Tensor,
    out: str | os.PathLike,
    rank: int = 0,
    world_size: int = 1,
    temperature: float = 50.0,
    top_k: int = 16,
    shard_size: int = 5000,
    progress: bool = True,
) -> SemanticSummary:
    """Writes this rank's shards `semantic-RRRRR-SSSSS.npz` under `out`."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skips, shards = SkipCounter(), []
    buffer: dict[str, list] = {"keys": [], "embeds": [], "idx": [], "prob": []}
    mine = records[rank::world_size]
    n_regions = 0

    def flush():
        if not buffer["keys"]:
            return
        path = out / f"semantic-{rank:05d}-{len(shards):05d}.npz"
        arrays = dict(keys=np.array(buffer["keys"]), embeds=np.concatenate(buffer["embeds"]).astype(np.float16),
                      topk_index=np.concatenate(buffer["idx"]), topk_prob=np.concatenate(buffer["prob"]).astype(np.float16))
        write_with(path, lambda tmp: np.savez(open(tmp, "wb"), **arrays))
        shards.append(path)
        for v in buffer.values():
            v.clear()

    for record in tqdm(mine, desc=f"semantic[{rank}]", disable=not progress, unit="img"):
        rgb = load_rgb(record.path, skips) if getattr(teacher, "needs_pixels", True) else None
        if rgb is None and getattr(teacher, "needs_pixels", True):
            continue
        regions, embeds = teacher.embed(rgb, record)
        if not regions:
            continue
        idx, prob = concept_targets(embeds, weights, temperature, top_k)
        buffer["keys"].extend(region_key(record.image_id, r.id) for r in regions)
        buffer["embeds"].append(embeds.numpy())
        buffer["idx"].append(idx)
        buffer["prob"].append(prob)
        n_regions += len(regions)
        if len(buffer["keys"]) >= shard_size:
            flush()
    flush()
    return SemanticSummary(len(mine), n_regions, shards, skips)


def region_key(image_id, region_id) -> str:
    return f"{image_id}/{region_id}"


@dataclass
class ConceptTarget:
    index: np.ndarray  # (k,) int
    prob: np.ndarray  # (k,) float32


class SemanticTargets:
    """All shards of a SemanticSA-1B directory, looked up by (image_id, region_id)."""

    def __init__(self, targets: dict[str, ConceptTarget]):
        self.targets = targets

    @classmethod
    def load(cls, root: str | os.PathLike) -> "SemanticTargets":
        root = Path(root)
        files = sorted(root.glob("semantic-*.npz")) if root.is_dir() else []
        if not files:
            raise UserError(f"no SemanticSA-1B shards (semantic-*.npz) in {root}")
        targets = {}
        for path in files:
            with np.load(path) as data:
                for key, idx, prob in zip(data["keys"], data["topk_index"], data["topk_prob"]):
                    targets[str(key)] = ConceptTarget(idx.astype(np.int64), prob.astype(np.float32))
        return cls(targets)

    def get(self, image_id, region_id) -> ConceptTarget | None:
        return self.targets.get(region_key(image_id, region_id))

    def __len__(self) -> int:
        return len(self.targets)
