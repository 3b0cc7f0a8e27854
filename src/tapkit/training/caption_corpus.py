"""Training text for the small causal LM that stands in for GPT-2 under an SCA on the
synthetic world (scripts/sca_pretrain_lm.py).

A frozen LM follows a prefix only if it learned to read its context. Trained on bare
captions it learns to ignore context (see docs/sam_sca.md), so a fraction of the
captions is preceded by a hint, its content words: the model learns to copy and
compose words it was shown, which an SCA mixer can then show it as soft tokens.

Sequences are packed like GPT-2's: the (hinted) captions of one image in random order,
each segment starting with EOS (GPT-2's end-of-text token), then the next image's, cut
to the context length plus one (inputs and shifted targets)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

FUNCTION_WORDS = frozenset({"a", "an", "the", "of"})


def content_words(caption: str) -> str:
    """The hint shown before a caption: its words without articles and "of"."""
    return " ".join(w for w in caption.split() if w.lower() not in FUNCTION_WORDS)


class PackedCaptions:
    """Draws packed training sequences of token ids, deterministically per seed.

    documents: the captions of each image; tokenizer: anything with `encode(str) ->
    list[int]` and `eos_id`."""

    def __init__(self, documents: Sequence[Sequence[str]], tokenizer, context: int, hint_prob: float = 0.5, seed: int = 0):
        documents = [list(d) for d in documents if d]
        if not documents:
            raise ValueError("no captions to train on")
        if not 0.0 <= hint_prob <= 1.0:
            raise ValueError(f"hint_prob must be in [0, 1], got {hint_prob}")
        self.documents = documents
        self.tokenizer = tokenizer
        self.context = context
        self.hint_prob = hint_prob
        self.rng = np.random.default_rng(seed)

    def segment(self, caption: str) -> list[int]:
        """EOS + caption, or EOS + hint + EOS + caption."""
        eos = self.tokenizer.eos_id
        ids = [eos] + list(self.tokenizer.encode(caption))
        if self.rng.random() < self.hint_prob:
            ids = [eos] + list(self.tokenizer.encode(content_words(caption))) + ids
        return ids

    def sample(self) -> list[int]:
        """One sequence of context + 1 ids."""
        out: list[int] = []
        while len(out) <= self.context:
            captions = self.documents[self.rng.integers(len(self.documents))]
            for k in self.rng.permutation(len(captions)):
                out += self.segment(captions[k])
        return out[: self.context + 1]
