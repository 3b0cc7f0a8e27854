"""The server's small parts on their own: content sniffing and the embedding cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serve_helpers import encode, shapes_image
from tapkit.inputs.image import ResizeInfo
from tapkit.predictor.predictor import ImageEmbedding
from tapkit.serve.cache import EmbeddingCache
from tapkit.serve.limits import decode_image, sniff_format


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_sniff_format_reads_magic_bytes(fmt):
    assert sniff_format(encode(shapes_image(), fmt)) == fmt


@pytest.mark.parametrize("data", [b"", b"GIF8", b"RIFF\x00\x00\x00\x00WAVE", b"\x00\x00\x01\x00", b"<html>", b"II*\x00"])
def test_sniff_format_rejects_other_content(data):
    assert sniff_format(data) is None


def test_decode_image_returns_rgb():
    rgb = shapes_image()
    decoded = decode_image(encode(rgb, "PNG"), max_bytes=10**6, max_pixels=10**6)
    assert decoded.format == "PNG" and np.array_equal(decoded.rgb, rgb)


def embedding(nbytes: int) -> ImageEmbedding:
    return ImageEmbedding(torch.zeros(nbytes // 4), ResizeInfo((10, 20), (10, 20), 1.0))


def test_cache_counts_embedding_and_upload_bytes():
    cache = EmbeddingCache(max_bytes=10_000)
    entry = cache.add(embedding(4000), b"x" * 100, "PNG")
    assert entry.nbytes == 4100 and cache.stats().bytes == 4100
    assert (entry.width, entry.height) == (20, 10)


def test_cache_evicts_least_recently_used_first():
    cache = EmbeddingCache(max_bytes=10_000)
    a, b = cache.add(embedding(4000), b"", "PNG"), cache.add(embedding(4000), b"", "PNG")
    assert cache.get(a.id) is a  # a is now the most recently used
    c = cache.add(embedding(4000), b"", "PNG")
    assert cache.get(b.id) is None and cache.get(a.id) is a and cache.get(c.id) is c
    assert cache.stats().evictions == 1 and cache.stats().bytes == 8000


def test_cache_keeps_an_oversized_image_alone():
    cache = EmbeddingCache(max_bytes=1000)
    a = cache.add(embedding(400), b"", "PNG")
    big = cache.add(embedding(4000), b"", "PNG")
    assert cache.get(a.id) is None and cache.get(big.id) is big and cache.stats().images == 1


def test_cache_ids_are_unique_and_unguessable():
    cache = EmbeddingCache(max_bytes=10**9)
    ids = {cache.add(embedding(4), b"", "PNG").id for _ in range(200)}
    assert len(ids) == 200 and all(len(i) >= 20 for i in ids)


def test_remove():
    cache = EmbeddingCache(max_bytes=10_000)
    a = cache.add(embedding(400), b"", "PNG")
    assert cache.remove(a.id) and not cache.remove(a.id)
    assert cache.stats().bytes == 0
