"""Training a SentencePiece BPE tokenizer for a new caption corpus (BOS 1, EOS 2, no pad)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from tapkit.errors import UserError
from tapkit.utils.atomic import write_bytes_atomic


def train_sentencepiece(captions: list[str], out: str | os.PathLike, vocab_size: int = 128) -> Path:
    """`vocab_size` is an upper bound: a small corpus gets fewer pieces."""
    import sentencepiece as spm

    captions = [c.strip() for c in captions if c and c.strip()]
    if not captions:
        raise UserError("no captions to train a tokenizer on")
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(captions), model_writer=buffer, vocab_size=vocab_size, model_type="bpe",
            character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
        )
    except RuntimeError as err:
        raise UserError(f"SentencePiece training failed: {err}") from None
    out = Path(out)
    write_bytes_atomic(out, buffer.getvalue())
    return out
