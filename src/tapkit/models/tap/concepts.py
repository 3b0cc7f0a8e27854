"""Concept vocabularies: L2-normalized CLIP text embeddings (times the CLIP logit
scale) of N concept names, (embed_dim, N), as in the official concept files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from tapkit.checkpoint.safe_pickle import UnsafePickleError, safe_load_pickle
from tapkit.errors import UserError


class ConceptFileError(UserError):
    """The concept file cannot be used."""


@dataclass
class TopConcepts:
    """Per region: `indices` and `probs` (N, k), best first."""

    indices: torch.Tensor
    probs: torch.Tensor


class ConceptVocabulary:
    def __init__(self, weights: torch.Tensor, names: list[str]):
        if weights.ndim != 2 or weights.shape[1] != len(names):
            raise ConceptFileError(
                f"concept weights of shape {tuple(weights.shape)} do not match {len(names)} names"
            )
        self.weights = weights.float()
        self.names = list(names)

    @property
    def embed_dim(self) -> int:
        return self.weights.shape[0]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ConceptVocabulary":
        """Reads an official concept pickle: [weights (D, N) float32, [N names]]."""
        path = Path(path)
        if not path.is_file():
            raise ConceptFileError(f"concept file not found: {path}")
        try:
            data = safe_load_pickle(path)
        except UnsafePickleError as err:
            raise ConceptFileError(f"refusing concept file {path}: {err}") from None
        except Exception as err:  # any other decoding failure is a corrupt file
            raise ConceptFileError(f"corrupt concept file {path}: {err}") from None
        if not (isinstance(data, (list, tuple)) and len(data) == 2 and isinstance(data[0], np.ndarray)):
            raise ConceptFileError(f"not a concept file (expected [weights, names]): {path}")
        weights, names = data
        return cls(torch.from_numpy(np.asarray(weights, dtype=np.float32)), [str(n) for n in names])

    def logits(self, embeds: torch.Tensor) -> torch.Tensor:
        """embeds: (..., D) -> (..., N) float32 logits."""
        embeds = embeds.float()
        return F.normalize(embeds, dim=-1) @ self.weights.to(embeds.device)

    def probabilities(self, embeds: torch.Tensor) -> torch.Tensor:
        """embeds: (..., D) -> (..., N) float32 probabilities over the vocabulary."""
        return self.logits(embeds).softmax(dim=-1)

    def top_k(self, embeds: torch.Tensor, k: int = 1) -> TopConcepts:
        return self.top_of_probabilities(self.probabilities(embeds), k)

    def top_of_probabilities(self, probs: torch.Tensor, k: int = 1) -> TopConcepts:
        values, indices = probs.topk(min(k, len(self.names)), dim=-1)
        return TopConcepts(indices=indices, probs=values)

    def top_names(self, embeds: torch.Tensor, k: int) -> list[list[tuple[str, float]]]:
        """The k most probable names of each of N embeddings (N, D), best first, with
        their probabilities: the one concept naming of the predictor and automatic mode."""
        return self.names_of(self.probabilities(embeds), k)

    def names_of(self, probs: torch.Tensor, k: int) -> list[list[tuple[str, float]]]:
        """The k most probable names of each row of probabilities (N, len(self)), best first."""
        top = self.top_of_probabilities(probs, k)
        return [[(self.names[j], float(p)) for j, p in zip(idx, prob)] for idx, prob in zip(top.indices.tolist(), top.probs.tolist())]
