"""Untrusted input at the door: image type sniffed from the bytes (never from the
file name or the declared content type), file size and pixel count bounded before
any decoding, and every request body counted as it streams in."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image
from starlette.exceptions import HTTPException

from tapkit.inputs.image import pil_to_rgb
from tapkit.serve.errors import PayloadTooLarge, UnreadableImage, UnsupportedImage
from tapkit.serve.security import reply

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")


def sniff_format(data: bytes) -> str | None:
    """The image format named by the file's magic bytes, if it is one we accept."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    return None


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8, EXIF orientation applied; GIFs give their first frame
    format: str


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Checks and decodes an uploaded file. Raises PayloadTooLarge (413), UnsupportedImage
    (415) or UnreadableImage (422) with a message meant for the client."""
    if len(data) == 0:
        raise UnreadableImage("the uploaded file is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the file has {len(data)} bytes; the limit is {max_bytes}")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedImage(f"not a supported image; send {', '.join(ALLOWED_FORMATS)} (checked by content)")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise PayloadTooLarge(f"the image has {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
            im.seek(0)
            rgb = pil_to_rgb(im)
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError:
        raise PayloadTooLarge(f"the image has too many pixels; the limit is {max_pixels}") from None
    except Exception as err:  # PIL reports broken files with many exception types
        raise UnreadableImage(f"cannot decode the {fmt} image: {err}") from None
    if min(rgb.shape[:2]) < 1:
        raise UnreadableImage("the image has no pixels")
    return DecodedImage(rgb, fmt)


class BodyTooLarge(HTTPException):
    """Raised while a body streams in; an HTTPException so the framework passes it through."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body exceeds {limit} bytes")


class BodySizeLimit:
    """ASGI middleware: rejects a request whose Content-Length exceeds the limit for its
    path before reading it, and stops reading a streamed body at the limit."""

    def __init__(self, app, limit_for: Callable[[str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await reply(send, 400, "invalid Content-Length header")
                return
            if int(declared) > limit:
                await reply(send, 413, f"the request body has {int(declared)} bytes; the limit is {limit}")
                return
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted_receive, send)

