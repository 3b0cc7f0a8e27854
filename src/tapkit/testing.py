"""Tiny random models and companion files, built offline, for tests, examples
and benchmarks (no downloads)."""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tapkit.models.tap.config import ImageDecoderConfig, ImageEncoderConfig, TapConfig, TextDecoderConfig
from tapkit.models.tap.model import TapModel

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "ellipse")
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")


def tiny_config(vocab_size: int, image_size: int = 128) -> TapConfig:
    """A TAP small enough for unit tests; head counts follow the official rules, so
    the architecture can be read back off its weights."""
    return TapConfig(
        ImageEncoderConfig(depth=4, embed_dim=32, num_heads=2, image_size=image_size, window_size=4, out_dim=64),
        ImageDecoderConfig(embed_dim=64, num_heads=2, mlp_dim=2048, cross_attn_dim=32, sem_embed_dim=64),
        TextDecoderConfig(depth=2, embed_dim=128, num_heads=2, prompt_embed_dim=64, vocab_size=vocab_size),
    )


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Gives every parameter and batch-norm statistic non-trivial random values,
    so numerical checks are not fooled by identity-like initialisations."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point() or name.endswith("coord_matrix") or name.startswith("pixel_"):
            continue
        noise = torch.randn(tensor.shape, generator=gen) * scale
        if name.endswith("running_var"):
            noise = noise.abs() + 0.5
        elif name.endswith(("norm1.weight", "norm2.weight", "norm3.weight", "norm4.weight", "norm.weight")):
            noise = noise + 1.0
        tensor.copy_(noise.to(tensor.dtype) / max(1.0, (tensor.shape[-1] if tensor.ndim else 1) ** 0.5 / 4))
    return model


def caption_corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    sizes = ("small", "large", "tiny", "big")
    relations = ("left of", "right of", "above", "below", "next to")
    out = []
    for _ in range(n):
        a = f"a {rng.choice(sizes)} {rng.choice(COLOURS)} {rng.choice(SHAPES)}"
        b = f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)}"
        out.append(f"{a} {rng.choice(relations)} {b}")
    return out


def train_tokenizer(path: str | os.PathLike, vocab_size: int = 96, corpus: list[str] | None = None) -> Path:
    """Trains a small BPE SentencePiece model (BOS 1, EOS 2, no pad) on `corpus`."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus or caption_corpus()),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path = Path(path)
    path.write_bytes(buffer.getvalue())
    return path


def random_concepts(path: str | os.PathLike, dim: int, names: list[str], seed: int = 0) -> Path:
    """An official-format concept file: [weights (dim, N) float32, names]."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((dim, len(names))).astype(np.float32)
    w = w / np.linalg.norm(w, axis=0, keepdims=True) * 100.0
    path = Path(path)
    path.write_bytes(pickle.dumps([w, list(names)]))
    return path


def save_official_pkl(model: TapModel, path: str | os.PathLike) -> Path:
    """Writes the weights as the official release does: a pickle of name -> numpy array,
    derived buffers included (the reference loads its files strictly)."""
    from tapkit.models.tap.image_encoder import relative_position_index
    from tapkit.models.tap.model import PIXEL_MEAN_BGR, PIXEL_STD_BGR

    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays["pixel_mean"] = np.array(PIXEL_MEAN_BGR, np.float32)
    arrays["pixel_rsig"] = np.reciprocal(np.array(PIXEL_STD_BGR, np.float32))
    index = relative_position_index(model.cfg.image_encoder.window_size).numpy()
    for i in range(model.cfg.image_encoder.depth):
        arrays[f"image_encoder.blocks.{i}.attn.rel_pos_embed.index"] = index
    path = Path(path)
    path.write_bytes(pickle.dumps(arrays))
    return path


@dataclass
class TinyModelFiles:
    checkpoint: Path
    tokenizer: Path
    concepts: Path
    config: TapConfig


def make_tiny_model_files(directory: str | os.PathLike, seed: int = 0, image_size: int = 128) -> TinyModelFiles:
    """A random tiny TAP saved as an official .pkl, with a tokenizer and concept file."""
    from tapkit.models.tap.tokenizer import TextTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(directory / "tiny.model")
    vocab = TextTokenizer(tokenizer).n_words
    cfg = tiny_config(vocab, image_size)
    torch.manual_seed(seed)
    model = randomize(TapModel(cfg), seed)
    checkpoint = save_official_pkl(model, directory / "tiny_tap.pkl")
    names = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    concepts = random_concepts(directory / "tiny_concepts.pkl", cfg.image_decoder.sem_embed_dim, names, seed)
    return TinyModelFiles(checkpoint, tokenizer, concepts, cfg)


def tiny_sam_config(image_size: int = 128, window_size: int = 3, global_attn_indexes: tuple[int, ...] = (1, 3)):
    """A SAM small enough for unit tests, with windowed blocks whose window does not
    divide the patch grid (so window padding is exercised) and two global blocks; head
    counts follow the rules that let the architecture be read back off its weights."""
    from tapkit.models.sam.config import SamConfig, SamDecoderConfig, SamEncoderConfig

    return SamConfig(
        SamEncoderConfig(
            depth=4, embed_dim=32, num_heads=2, image_size=image_size, window_size=window_size,
            out_dim=64, global_attn_indexes=global_attn_indexes,
        ),
        SamDecoderConfig(embed_dim=64, num_heads=2, mlp_dim=128, iou_head_hidden_dim=64, mask_in_chans=16),
    )


def make_tiny_sam_checkpoint(path: str | os.PathLike, seed: int = 0, image_size: int = 128) -> Path:
    """A random tiny SAM saved as the official release is: torch.save of its state dict."""
    from tapkit.models.sam.model import SamModel

    torch.manual_seed(seed)
    model = randomize(SamModel(tiny_sam_config(image_size)), seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def tiny_clip_config(vocab_size: int, quick_gelu: bool = False, image_size: int = 32, layers: int = 6):
    """A CLIP small enough for unit tests: 32 px, patch 8 (a 4x4 grid), `layers` 32-wide
    vision blocks of 4 heads; a 2-block text tower with a 16-token context."""
    from tapkit.models.clip.config import ClipConfig, TextConfig, VisionConfig

    return ClipConfig(24, VisionConfig(image_size, 8, 32, layers, 4), TextConfig(16, vocab_size, 32, 4, 2), quick_gelu)


def train_clip_vocab(directory: str | os.PathLike, corpus: list[str] | None = None, merges: int = 120) -> Path:
    """A tiny CLIP BPE (vocab.json + merges.txt) trained on the tiny caption corpus and the
    48 concept names."""
    from tapkit.training.clip_vocab import train_clip_bpe

    names = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    return train_clip_bpe((corpus or caption_corpus()) + names + [f"a photo of a {n}." for n in names], directory, merges)


@dataclass
class TinyClipFiles:
    folder: Path  # an open_clip hub folder: tapkit.load_clip(folder) loads it
    config: object  # its ClipConfig


def make_tiny_clip(directory: str | os.PathLike, seed: int = 0, quick_gelu: bool = False, image_size: int = 32,
                   layers: int = 6) -> TinyClipFiles:
    """A random tiny CLIP with its tiny vocab.json/merges.txt, written as an open_clip
    hub folder (open_clip_config.json + open_clip_model.safetensors + tokenizer)."""
    from tapkit.models.clip.model import ClipModel
    from tapkit.models.clip.save import save_open_clip_folder
    from tapkit.models.clip.tokenizer import ClipTokenizer

    folder = Path(directory)
    tokenizer = ClipTokenizer.from_dir(train_clip_vocab(folder))
    cfg = tiny_clip_config(tokenizer.vocab_size, quick_gelu, image_size, layers)
    torch.manual_seed(seed)
    model = randomize(ClipModel(cfg), seed)
    save_open_clip_folder(model, tokenizer, folder)
    return TinyClipFiles(folder, cfg)
