"""The captioner's tokenizer, whatever its kind: a Hugging Face tokenizer directory
(GPT-2's BPE for the released models) or a SentencePiece model (tapkit's own small
language models). SCA feeds no BOS token: a caption is its pieces then EOS."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from tapkit.models.tap.tokenizer import TextTokenizer, TokenizerError


# transformers' clean_up_tokenization_spaces rule, on by default for GPT-2 in the version
# the official SCA code pinned (later versions turned the default off): spaces before
# punctuation and English contractions go.
CLEAN_UP_SPACES = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)


def clean_up_spaces(text: str) -> str:
    """"a dog ." -> "a dog.", "it 's" -> "it's" (the replacements in order, as transformers)."""
    for before, after in CLEAN_UP_SPACES:
        text = text.replace(before, after)
    return text


class CaptionTokenizer(Protocol):
    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Pieces of `text`, without BOS or EOS."""

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, stopping at the first EOS."""


class SentencePieceCaptionTokenizer:
    def __init__(self, tokenizer: TextTokenizer):
        self.sp = tokenizer
        self.path = tokenizer.path
        self.eos_id = tokenizer.eos_id
        self.vocab_size = tokenizer.n_words

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, bos=False, eos=False)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(list(ids))


class HuggingFaceCaptionTokenizer:
    def __init__(self, path: str | os.PathLike):
        from transformers import AutoTokenizer

        self.path = Path(path)
        try:
            self.hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise TokenizerError(f"cannot load a tokenizer from {path}: {err}") from None
        if self.hf.eos_token_id is None:
            raise TokenizerError(f"tokenizer {path} defines no EOS token")
        self.eos_id = int(self.hf.eos_token_id)
        self.vocab_size = len(self.hf)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        # The official decoding cleans up spaces; tapkit applies the rule itself, so the text
        # does not depend on the installed transformers' default.
        text = self.hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return clean_up_spaces(text).strip()


def load_caption_tokenizer(source) -> CaptionTokenizer:
    """A CaptionTokenizer from an object that is one, a TextTokenizer, a SentencePiece
    .model file, or a directory holding a Hugging Face tokenizer."""
    if source is None or hasattr(source, "eos_id") and hasattr(source, "vocab_size"):
        return source
    if isinstance(source, TextTokenizer):
        return SentencePieceCaptionTokenizer(source)
    path = Path(source)
    if path.is_dir():
        return HuggingFaceCaptionTokenizer(path)
    if not path.is_file():
        raise TokenizerError(f"tokenizer not found: {path}")
    return SentencePieceCaptionTokenizer(TextTokenizer(path))
