"""Request and response bodies of the HTTP API (they make the OpenAPI schema).
Prompts mirror the CLI's PROMPTS.json objects; regions are the CLI's region JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_POINTS = 64
MAX_SKETCH_POINTS = 4096


class PromptIn(BaseModel):
    """One region's prompt, in original image pixels. Clicks and a box may be combined."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"points": [[120, 80, 1], [150, 90, 0]]}, {"box": [10, 20, 200, 160]}]})

    points: list[list[float]] | None = Field(None, max_length=MAX_POINTS, description="clicks [x, y, label]; label 1 = foreground, 0 = background")
    box: list[float] | None = Field(None, description="[x1, y1, x2, y2]")
    sketch: list[list[float]] | None = Field(None, max_length=MAX_SKETCH_POINTS, description="a polyline [[x, y], ...]; becomes 9 foreground points")


class RegionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: list[PromptIn] = Field(..., min_length=1, description="one region per prompt")
    top_k: int = Field(5, ge=0, description="concepts listed per region")
    captions: bool = Field(True, description="generate a caption per region")


class ImageOut(BaseModel):
    id: str = Field(..., description="use in /v1/images/{id}/...; valid while the image stays in the cache")
    width: int
    height: int
    format: str = Field(..., description="the detected file type")


class RleMask(BaseModel):
    size: list[int] = Field(..., description="[height, width]")
    counts: str = Field(..., description="COCO compressed RLE (column-major runs, starting with background)")


class RegionOut(BaseModel):
    prompt: dict = Field(..., description="the prompt as the model saw it (a sketch appears as its 9 points)")
    mask: RleMask
    bbox: list[int] = Field(..., description="[x, y, w, h] of the mask")
    area: int
    score: float = Field(..., description="the model's predicted IoU of the mask, clamped to [0, 1] (an estimate of the mask's overlap with the object, not a probability)")
    concept: str | None
    concept_score: float | None
    concepts: list[tuple[str, float]]
    caption: str | None


class ImageRef(BaseModel):
    id: str
    width: int
    height: int


class RegionsOut(BaseModel):
    image: ImageRef
    regions: list[RegionOut]


class ModelInfo(BaseModel):
    image_size: int
    captions: bool
    concepts: int
    device: str
    everything: bool = Field(..., description="whether automatic mode is available")
    segmenter: bool = Field(False, description="whether /segment (open-vocabulary semantic segmentation) is available")


MAX_CLASSES = 512


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"classes": ["background", "red circle", "blue star"]}]})

    classes: list[str] = Field(..., min_length=1, max_length=MAX_CLASSES, description="class names, in label order")


class ClassOut(BaseModel):
    index: int = Field(..., description="the class's position in the request, the label map's value")
    name: str
    area: int = Field(..., description="pixels labelled with this class")
    score: float = Field(..., description="mean share of the pixels' semantic scores, in [0, 1] (0 where none)")
    segmentation: RleMask


class SegmentOut(BaseModel):
    image: ImageRef
    classes: list[ClassOut]


class CacheInfo(BaseModel):
    images: int
    bytes: int
    max_bytes: int
    evictions: int


class BatchInfo(BaseModel):
    batches: int = Field(..., description="model calls made for /regions")
    requests: int = Field(..., description="/regions requests they served")


class Limits(BaseModel):
    max_upload_bytes: int
    max_pixels: int
    max_prompts: int
    max_top_k: int


class Health(BaseModel):
    status: str
    model: ModelInfo
    cache: CacheInfo
    batching: BatchInfo
    limits: Limits


class ErrorOut(BaseModel):
    """Every error answer (4xx, 5xx)."""

    detail: str = Field(..., description="one line saying what is wrong")


ERROR_DESCRIPTIONS = {
    400: "bad request: a Host this server does not serve, or an invalid Content-Length",
    403: "a write from another site (cross-origin) is refused",
    404: "unknown image id: never uploaded, deleted or evicted from the cache",
    413: "the request body is over the limit",
    415: "the upload is not an image of a supported type",
    422: "the request is malformed (bad JSON, a prompt outside the image, an unreadable image, over a limit)",
    500: "the server failed (details only in its log)",
    501: "automatic mode (or the segmenter) is turned off in this server",
}


def error_responses(*codes: int) -> dict:
    """The `responses` of a route: each error code with its body, {"detail": "..."}."""
    return {code: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[code]} for code in codes}
