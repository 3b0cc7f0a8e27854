"""The caption LM's training text: hints, packing, determinism."""

import pytest

from tapkit.training.caption_corpus import PackedCaptions, content_words


class WordTokenizer:
    """One id per word (ids from 1), EOS = 0."""

    eos_id = 0

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return [self.vocab.setdefault(w, len(self.vocab) + 1) for w in text.split()]

    def decode(self, ids) -> str:
        inverse = {v: k for k, v in self.vocab.items()}
        return " ".join(inverse[i] if i else "<eos>" for i in ids)


DOCS = [["a small red circle left of a blue star", "a large blue star right of a red circle"], ["a green square"]]


def test_content_words_drop_articles_and_of():
    assert content_words("a small red circle left of a blue star") == "small red circle left blue star"
    assert content_words("An Apple of the tree") == "Apple tree"


def segments(text: str) -> list[str]:
    return [s.strip() for s in text.split("<eos>") if s.strip()]


def test_sequences_are_context_plus_one_and_hints_precede_their_caption():
    tok = WordTokenizer()
    corpus = PackedCaptions(DOCS, tok, context=200, hint_prob=1.0, seed=0)
    seq = corpus.sample()
    assert len(seq) == 201 and seq[0] == tok.eos_id
    parts = segments(tok.decode(seq))[:-1]  # the last one may be cut
    assert len(parts) >= 4
    for hint, caption in zip(parts[0::2], parts[1::2]):
        assert hint == content_words(caption)
        assert caption in {c for d in DOCS for c in d}


def test_no_hints_at_probability_zero_and_both_kinds_in_between():
    tok = WordTokenizer()
    captions = {c for d in DOCS for c in d}
    plain = segments(tok.decode(PackedCaptions(DOCS, tok, context=300, hint_prob=0.0, seed=1).sample()))[:-1]
    assert plain and all(p in captions for p in plain)
    mixed = segments(tok.decode(PackedCaptions(DOCS, tok, context=600, hint_prob=0.5, seed=1).sample()))[:-1]
    assert any(p in captions for p in mixed) and any(p not in captions for p in mixed)


def test_same_seed_same_sequences_other_seed_others():
    tok = WordTokenizer()
    a = PackedCaptions(DOCS, tok, context=64, seed=3)
    b = PackedCaptions(DOCS, tok, context=64, seed=3)
    c = PackedCaptions(DOCS, tok, context=64, seed=4)
    first = [a.sample() for _ in range(5)]
    assert first == [b.sample() for _ in range(5)]
    assert first != [c.sample() for _ in range(5)]


def test_bad_arguments():
    with pytest.raises(ValueError):
        PackedCaptions([[], []], WordTokenizer(), context=8)
    with pytest.raises(ValueError):
        PackedCaptions(DOCS, WordTokenizer(), context=8, hint_prob=1.5)
