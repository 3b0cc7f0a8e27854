"""CLIP's tokenizer from `vocab.json` + `merges.txt`, giving open_clip's ids.

open_clip's cleaning runs first, in Python: ftfy's `fix_text` when ftfy is installed
(else Unicode NFC, the part of ftfy that matters for ordinary text), HTML entities
unescaped twice, whitespace collapsed, lower-cased. The byte-level BPE itself runs in
the `tokenizers` library (the Rust BPE transformers uses for CLIP), with CLIP's
pre-tokenizing pattern and the `</w>` end-of-word suffix. A row is
[start] + pieces + [end], cut to `context_length` with end-of-text in the last slot,
padded with 0."""

from __future__ import annotations

import html
import json
import os
import unicodedata
from functools import lru_cache
from pathlib import Path

import torch

from tapkit.errors import UserError

START_TOKEN, END_TOKEN = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
# CLIP's pre-tokenizing pattern (open_clip's `SimpleTokenizer.pat`, special tokens handled apart).
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable characters
    (printable bytes map to themselves, the rest to code points from 256 on)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def _fix_text(text: str) -> str:
    try:
        import ftfy
    except ImportError:
        return unicodedata.normalize("NFC", text)
    return ftfy.fix_text(text)


def clean_text(text: str) -> str:
    """open_clip's 'lower' cleaning: fix_text, HTML unescaped twice, whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return " ".join(text.split()).lower()


def pre_tokenizer():
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True)
    return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt: an optional '#version' line, then one 'left right' pair per line."""
    merges = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise UserError(f"{path}:{number}: a merge is two symbols separated by a space, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


class ClipTokenizer:
    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], context_length: int = 77, source: str = ""):
        from tokenizers import Tokenizer
        from tokenizers.models import BPE

        self.vocab, self.merges, self.context_length, self.source = vocab, merges, context_length, source
        self.start_id = vocab.get(START_TOKEN, len(vocab) - 2)
        self.end_id = vocab.get(END_TOKEN, len(vocab) - 1)
        missing = [m for m in merges if m[0] + m[1] not in vocab]
        if missing:
            raise UserError(f"CLIP tokenizer {source}: merge {' '.join(missing[0])!r} makes a piece not in vocab.json")
        self.bpe = Tokenizer(BPE(vocab=vocab, merges=merges, end_of_word_suffix=END_OF_WORD,
                                 continuing_subword_prefix="", unk_token=None, fuse_unk=False))
        self.bpe.pre_tokenizer = pre_tokenizer()
        self.bpe.add_special_tokens([t for t in (START_TOKEN, END_TOKEN) if t in vocab])

    @classmethod
    def from_dir(cls, folder: str | os.PathLike, context_length: int = 77) -> "ClipTokenizer":
        folder = Path(folder)
        vocab_path, merges_path = folder / VOCAB_FILE, folder / MERGES_FILE
        for path in (vocab_path, merges_path):
            if not path.is_file():
                raise UserError(f"CLIP tokenizer file not found: {path} (a tokenizer folder holds vocab.json and merges.txt)")
        try:
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"malformed {vocab_path}: {err}") from None
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise UserError(f"malformed {vocab_path}: expected a mapping of pieces to ids")
        return cls(vocab, read_merges(merges_path), context_length, str(folder))

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike, context_length: int = 77) -> "ClipTokenizer":
        """The vocabulary and merges of a `tokenizers` tokenizer.json (open_clip hub folders
        sometimes ship only this); CLIP's own cleaning and splitting are used regardless."""
        path = Path(path)
        try:
            model = json.loads(path.read_text(encoding="utf-8"))["model"]
            vocab = dict(model["vocab"])
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise UserError(f"malformed {path}: {err}") from None
        return cls(vocab, merges, context_length, str(path))

    def save(self, folder: str | os.PathLike) -> Path:
        """Writes FOLDER/vocab.json and FOLDER/merges.txt (OpenAI's formats)."""
        from tapkit.utils.atomic import write_text_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / MERGES_FILE, "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges))
        write_text_atomic(folder / VOCAB_FILE, json.dumps(self.vocab, ensure_ascii=False))
        return folder

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """The pieces of `text` (no start or end token)."""
        cleaned = clean_text(text)
        return self.bpe.encode(cleaned, add_special_tokens=False).ids if cleaned else []

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> torch.Tensor:
        """texts -> LongTensor (N, context_length)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start_id] + self.encode(text) + [self.end_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.end_id
            out[row, : len(ids)] = torch.tensor(ids)
        return out


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary layout for a merge list: the 256 byte symbols, the same with
    `</w>`, one piece per merge in merge order, then start and end of text (the highest ids)."""
    symbols = list(bytes_to_unicode().values())
    pieces = symbols + [s + END_OF_WORD for s in symbols] + [a + b for a, b in merges] + [START_TOKEN, END_TOKEN]
    return {piece: i for i, piece in enumerate(pieces)}
