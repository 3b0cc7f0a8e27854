"""SentencePiece tokenizer wrapper with the reference's special-id conventions."""

from __future__ import annotations

import os
from pathlib import Path

import sentencepiece as spm

from tapkit.errors import UserError


class TokenizerError(UserError):
    """The tokenizer file cannot be used."""


class TextTokenizer:
    """BOS/EOS from the model; the pad id is `n_words` when the model defines none
    (so it never collides with a real piece)."""

    def __init__(self, model_path: str | os.PathLike):
        path = Path(model_path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as err:
            raise TokenizerError(f"not a SentencePiece model: {path} ({err})") from None
        self.path = path
        self.n_words: int = self.sp.vocab_size()
        self.bos_id: int = self.sp.bos_id()
        self.eos_id: int = self.sp.eos_id()
        pad = self.sp.pad_id()
        self.pad_id: int = pad + self.n_words if pad < 0 else pad
        if self.bos_id < 0 or self.eos_id < 0:
            raise TokenizerError(f"tokenizer {path} defines no BOS/EOS pieces")

    def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        ids = self.sp.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: list[int]) -> str:
        """Decodes generated ids (no BOS), stopping at the first EOS."""
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.sp.decode(ids)
