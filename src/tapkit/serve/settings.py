"""Server limits and tuning, one frozen dataclass passed to `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, fields

from tapkit.errors import UserError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """max_upload_bytes: largest accepted image file. max_pixels: largest width x height
    (checked from the header, before decoding). max_json_bytes: largest JSON request body.
    max_prompts: prompts per request. max_top_k: concepts per region a client may ask for.
    cache_bytes: memory bound of the image-embedding cache (embeddings plus uploaded files).
    batch_window_ms: how long a /regions request waits for others on the same image to
    share its decoder batch. max_batch: prompts decoded together (decoder batch size);
    max_batch_prompts: prompts from concurrent requests merged into one model call.
    allowed_hosts: host names (without port) requests may be addressed to; None allows any."""

    max_upload_bytes: int = 20 * MIB
    max_pixels: int = 36_000_000
    max_json_bytes: int = 2 * MIB
    max_prompts: int = 64
    max_top_k: int = 20
    cache_bytes: int = 1024 * MIB
    batch_window_ms: float = 2.0
    max_batch: int = 64
    max_batch_prompts: int = 256
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "allowed_hosts":
                continue
            minimum = 0 if f.name in ("batch_window_ms", "max_top_k") else 1
            if value < minimum:
                raise UserError(f"server setting {f.name} must be >= {minimum}, got {value}")

    @property
    def batch_window_s(self) -> float:
        return self.batch_window_ms / 1000.0
