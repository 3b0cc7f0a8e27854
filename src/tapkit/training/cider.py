"""CIDEr-D (Vedantam et al. 2015, the coco-caption variant): tf-idf weighted n-gram
(1-4) cosine similarity with clipped candidate counts and a Gaussian length
penalty (sigma 6), averaged over n and references, times 10. Document frequencies
come from the references of the evaluated set. Tokenization here is lower-case
words with punctuation removed (the official scorer uses the PTB tokenizer)."""

from __future__ import annotations

import math
import re
from collections import Counter

SIGMA = 6.0
MAX_N = 4


def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _vector(counts: Counter, df: Counter, log_docs: float) -> tuple[dict, float]:
    vec = {g: tf * (log_docs - math.log(max(1.0, df[g]))) for g, tf in counts.items()}
    return vec, math.sqrt(sum(v * v for v in vec.values()))


def cider_d(candidates: list[str], references: list[list[str]]) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and the per-candidate scores. references[i] are the references of candidates[i]."""
    assert len(candidates) == len(references) and candidates, "one list of references per candidate"
    refs_words = [[tokenize(r) for r in refs] for refs in references]
    df: Counter = Counter()
    for refs in refs_words:
        seen = set()
        for words in refs:
            for n in range(1, MAX_N + 1):
                seen.update(ngrams(words, n))
        df.update(seen)
    log_docs = math.log(float(len(candidates)))
    scores = []
    for cand, refs in zip(candidates, refs_words):
        cand_words = tokenize(cand)
        total = 0.0
        for n in range(1, MAX_N + 1):
            c_vec, c_norm = _vector(ngrams(cand_words, n), df, log_docs)
            per_ref = 0.0
            for ref in refs:
                r_vec, r_norm = _vector(ngrams(ref, n), df, log_docs)
                dot = sum(min(v, r_vec[g]) * r_vec[g] for g, v in c_vec.items() if g in r_vec)
                sim = dot / (c_norm * r_norm) if c_norm > 0 and r_norm > 0 else 0.0
                per_ref += sim * math.exp(-((len(cand_words) - len(ref)) ** 2) / (2 * SIGMA**2))
            total += per_ref / len(refs)
        scores.append(10.0 * total / MAX_N)
    return sum(scores) / len(scores), scores
