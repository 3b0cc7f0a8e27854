"""Training a small CLIP-style byte-level BPE (vocab.json + merges.txt) on a text corpus,
with the `tokenizers` library's trainer and CLIP's cleaning and pre-tokenizing, so
`ClipTokenizer` reads the result exactly like OpenAI's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tapkit.errors import UserError
from tapkit.models.clip.tokenizer import END_OF_WORD, ClipTokenizer, bytes_to_unicode, clean_text, clip_vocab, pre_tokenizer


def train_clip_bpe(texts: list[str], out_dir: str | os.PathLike, merges: int = 256) -> Path:
    """Learns up to `merges` merges; writes OUT_DIR/vocab.json (CLIP's layout: 512 byte
    symbols, the merges, then start/end of text) and OUT_DIR/merges.txt."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    cleaned = [c for c in (clean_text(t) for t in texts) if c]
    if not cleaned:
        raise UserError("no text to train a CLIP tokenizer on")
    alphabet = list(bytes_to_unicode().values())
    tokenizer = Tokenizer(BPE(end_of_word_suffix=END_OF_WORD, continuing_subword_prefix=""))
    tokenizer.pre_tokenizer = pre_tokenizer()
    trainer = BpeTrainer(vocab_size=2 * len(alphabet) + merges, initial_alphabet=alphabet, limit_alphabet=len(alphabet),
                         end_of_word_suffix=END_OF_WORD, show_progress=False, special_tokens=[])
    tokenizer.train_from_iterator(cleaned, trainer)
    learned = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
               for m in json.loads(tokenizer.to_str())["model"]["merges"]][:merges]
    return ClipTokenizer(clip_vocab(learned), learned).save(out_dir)
