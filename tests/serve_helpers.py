"""Shared helpers for the server tests: encoded images, crafted headers, app factories."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(rgb: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels but holds no image data: opening it
    reads the header only, decoding it would need width * height * 3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def shapes_image(height: int = 96, width: int = 144) -> np.ndarray:
    """A few flat coloured shapes on a light background."""
    rgb = np.full((height, width, 3), (226, 232, 240), np.uint8)
    yy, xx = np.mgrid[:height, :width]
    rgb[(yy - height * 0.5) ** 2 + (xx - width * 0.25) ** 2 < (height * 0.22) ** 2] = (217, 65, 43)
    rgb[int(height * 0.3) : int(height * 0.75), int(width * 0.45) : int(width * 0.65)] = (43, 108, 217)
    rgb[int(height * 0.8) :] = (143, 191, 106)
    return rgb


def upload(client, data: bytes, name: str = "image.png", content_type: str = "image/png"):
    return client.post("/v1/images", files={"file": (name, data, content_type)})
