"""The image-embedding cache: uploaded images are encoded once and kept, least recently
used first out, within a memory bound counted in bytes."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from tapkit.predictor.predictor import ImageEmbedding


@dataclass(frozen=True)
class CachedImage:
    """One uploaded image: its encoder output, and the uploaded file itself (kept for
    automatic mode, which needs the pixels). nbytes counts both."""

    id: str
    embedding: ImageEmbedding
    upload: bytes
    format: str

    @property
    def height(self) -> int:
        return self.embedding.info.original_size[0]

    @property
    def width(self) -> int:
        return self.embedding.info.original_size[1]

    @property
    def nbytes(self) -> int:
        tensor = self.embedding.embedding
        return tensor.numel() * tensor.element_size() + len(self.upload)


@dataclass(frozen=True)
class CacheStats:
    images: int
    bytes: int
    max_bytes: int
    evictions: int


class EmbeddingCache:
    """LRU of `CachedImage` keyed by random, unguessable ids. Thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, CachedImage] = OrderedDict()
        self._bytes = 0
        self._evictions = 0
        self._lock = threading.Lock()

    def add(self, embedding: ImageEmbedding, upload: bytes, format: str) -> CachedImage:
        """Stores a new image under a fresh id, evicting the least recently used ones to
        stay within the bound. An image larger than the whole bound is still kept (alone)
        so that the client that just paid for it can use it."""
        entry = CachedImage(secrets.token_urlsafe(16), embedding, upload, format)
        with self._lock:
            while self._items and self._bytes + entry.nbytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
                self._evictions += 1
            self._items[entry.id] = entry
            self._bytes += entry.nbytes
        return entry

    def get(self, image_id: str) -> CachedImage | None:
        with self._lock:
            entry = self._items.get(image_id)
            if entry is not None:
                self._items.move_to_end(image_id)
            return entry

    def remove(self, image_id: str) -> bool:
        with self._lock:
            entry = self._items.pop(image_id, None)
            if entry is None:
                return False
            self._bytes -= entry.nbytes
            return True

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._items), self._bytes, self.max_bytes, self._evictions)
