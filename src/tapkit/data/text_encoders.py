"""Text encoders that turn concept names into embeddings, and the concept-file builder.

`ClipText` wraps a CLIP's text tower (the paper's path). `HashText` is the
synthetic world's deterministic stand-in: a name's embedding is the normalized sum
of one fixed random vector per word, so 'red circle' and 'red star' share 'red'."""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.nn import functional as F

from tapkit.errors import UserError
from tapkit.utils.atomic import write_bytes_atomic

DEFAULT_TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.")


class TextEncoder(Protocol):
    dim: int
    logit_scale: float

    def encode(self, texts: list[str]) -> torch.Tensor:
        """texts -> (len(texts), dim) float32 embeddings (not necessarily normalized)."""


@dataclass
class HashText:
    dim: int = 256
    seed: int = 0
    logit_scale: float = 100.0

    def word_vector(self, word: str) -> np.ndarray:
        digest = hashlib.sha256(f"{self.seed}:{word}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return rng.standard_normal(self.dim)

    def encode(self, texts: list[str]) -> torch.Tensor:
        out = []
        for text in texts:
            words = [w for w in text.lower().replace(".", " ").split() if w not in ("a", "an", "the", "of", "photo", "picture")]
            vec = sum((self.word_vector(w) for w in words), np.zeros(self.dim))
            out.append(vec / max(np.linalg.norm(vec), 1e-8))
        return torch.tensor(np.stack(out), dtype=torch.float32)


class ClipText:
    """The text tower of a CLIP (`tapkit.load_clip`: the packaged one, or OpenAI /
    open_clip / transformers weights)."""

    def __init__(self, clip):
        self.clip = clip
        self.dim = clip.embed_dim
        self.logit_scale = clip.logit_scale

    def encode(self, texts: list[str]) -> torch.Tensor:
        return self.clip.encode_text(texts).cpu()


def concept_weights(names: list[str], encoder: TextEncoder, templates: tuple[str, ...] = DEFAULT_TEMPLATES) -> np.ndarray:
    """(dim, N) float32: the normalized mean over templates of the normalized text
    embeddings of each name, times the encoder's logit scale (the official layout)."""
    columns = []
    for name in names:
        emb = F.normalize(encoder.encode([t.format(name) for t in templates]), dim=-1).mean(0)
        columns.append(F.normalize(emb, dim=0) * encoder.logit_scale)
    return torch.stack(columns, 1).numpy().astype(np.float32)


def write_concept_file(path: str | os.PathLike, weights: np.ndarray, names: list[str]) -> Path:
    """Writes [weights (D, N) float32, names] as a pickle, like the official concept files."""
    path = Path(path)
    write_bytes_atomic(path, pickle.dumps([np.ascontiguousarray(weights, np.float32), list(names)]))
    return path


def read_names(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"names file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise UserError(f"no concept names in {path}")
    return names
