"""The HTTP API and the page: `create_app(model, settings)` returns a FastAPI app.

Model work runs on the model worker thread; decoding uploads and encoding masks as RLE
run on a small pool of other threads; the event loop only routes. No endpoint takes a
file path: images arrive as uploads and live in memory, in the embedding cache."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Callable

from fastapi import FastAPI, File, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tapkit import __version__
from tapkit.errors import UserError
from tapkit.models.interface import PromptableModel
from tapkit.inputs.prompts import Prompt, PromptError, encode_prompt
from tapkit.predictor.results import Region
from tapkit.segmenter.outputs import segmentation_json
from tapkit.segmenter.segmenter import Segmenter, check_classes
from tapkit.serve.batching import PromptBatcher
from tapkit.serve.cache import CachedImage, EmbeddingCache
from tapkit.serve.errors import ModelFailure, NotAvailable, ServeError, UnknownImage
from tapkit.serve.everything import EverythingFn, automatic_mode
from tapkit.serve.limits import BodySizeLimit, decode_image
from tapkit.serve.schemas import Health, ImageOut, RegionsOut, RegionsRequest, SegmentOut, SegmentRequest, error_responses
from tapkit.serve.security import RequestOriginGuard, SecurityHeaders
from tapkit.serve.settings import ServeSettings
from tapkit.serve.worker import ModelWorker

log = logging.getLogger("tapkit.serve")

STATIC_DIR = Path(__file__).parent / "static"
UPLOAD_PATH = "/v1/images"
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file
AUTOMATIC_MODE = object()  # create_app's default: tapkit's automatic mode

@dataclass
class ServerState:
    """Everything a request handler needs; one per app, no globals."""

    model: PromptableModel
    settings: ServeSettings
    worker: ModelWorker
    cache: EmbeddingCache
    batcher: PromptBatcher
    pixel_pool: ThreadPoolExecutor  # decoding uploads, encoding masks
    everything: EverythingFn | None
    segmenter: Segmenter | None = None  # open-vocabulary semantic segmentation (/segment)

    async def off_loop(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pixel_pool, fn, *args)

    def image(self, image_id: str) -> CachedImage:
        entry = self.cache.get(image_id)
        if entry is None:
            raise UnknownImage(image_id)
        return entry

    async def regions_json(self, entry: CachedImage, regions: list[Region]) -> dict:
        masks = await self.off_loop(lambda: [r.to_json() for r in regions])
        return {"image": {"id": entry.id, "width": entry.width, "height": entry.height}, "regions": masks}


def create_app(model: PromptableModel, settings: ServeSettings | None = None, everything=AUTOMATIC_MODE,
               segmenter: Segmenter | None = None) -> FastAPI:
    """The app serving `model`. `everything` is the automatic-mode function: by default
    tapkit's automatic mode (one generator for the app's model worker); None turns
    /everything off (it answers 501). `segmenter` (a `tapkit.Segmenter`) serves /segment,
    on the same model worker thread; without it /segment answers 501."""
    settings = settings or ServeSettings()
    worker = ModelWorker(model, settings.max_batch)
    state = ServerState(
        model=model,
        settings=settings,
        worker=worker,
        cache=EmbeddingCache(settings.cache_bytes),
        batcher=PromptBatcher(worker, settings.batch_window_s, settings.max_batch_prompts),
        pixel_pool=ThreadPoolExecutor(max_workers=2, thread_name_prefix="tapkit-pixels"),
        everything=automatic_mode(model) if everything is AUTOMATIC_MODE else everything,
        segmenter=segmenter,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.close()
        state.pixel_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="tapkit",
        version=__version__,
        summary="Segment, name and caption image regions from clicks, boxes and sketches.",
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.tapkit = state

    def body_limit(path: str) -> int:
        return settings.max_upload_bytes + MULTIPART_SLACK if path == UPLOAD_PATH else settings.max_json_bytes

    app.add_middleware(BodySizeLimit, limit_for=body_limit)
    app.add_middleware(RequestOriginGuard, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
    add_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    @app.get("/healthz", response_model=Health, tags=["service"], responses=error_responses(400, 500))
    async def healthz() -> dict:
        """Liveness, the model's capabilities, cache and batching counters, and the limits."""
        return {
            "status": "ok",
            "model": {
                "image_size": model.image_size,
                "captions": model.can_caption,
                "concepts": len(model.concepts) if model.can_name else 0,
                "device": str(model.device),
                "everything": state.everything is not None,
                "segmenter": state.segmenter is not None,
            },
            "cache": asdict(state.cache.stats()),
            "batching": asdict(state.batcher.stats()),
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "max_prompts": settings.max_prompts,
                "max_top_k": settings.max_top_k,
            },
        }

    @app.post(UPLOAD_PATH, response_model=ImageOut, status_code=201, tags=["images"],
              responses=error_responses(400, 403, 413, 415, 422, 500))
    async def upload_image(file: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP or GIF (first frame)")]) -> dict:
        """Uploads an image and computes its embedding once; prompts on it are then fast.
        The type is detected from the content; the name and declared type are ignored."""
        data = await file.read(settings.max_upload_bytes + 1)
        decoded = await state.off_loop(decode_image, data, settings.max_upload_bytes, settings.max_pixels)
        embedding = await worker.run(worker.embed, decoded.rgb)
        entry = state.cache.add(embedding, data, decoded.format)
        return {"id": entry.id, "width": entry.width, "height": entry.height, "format": entry.format}

    @app.get(UPLOAD_PATH + "/{image_id}", response_model=ImageOut, tags=["images"],
             responses=error_responses(400, 404, 422, 500))
    async def get_image(image_id: str) -> dict:
        """Whether an image is still cached, and its size."""
        entry = state.image(image_id)
        return {"id": entry.id, "width": entry.width, "height": entry.height, "format": entry.format}

    @app.delete(UPLOAD_PATH + "/{image_id}", status_code=204, tags=["images"],
                responses=error_responses(400, 403, 404, 422, 500))
    async def delete_image(image_id: str) -> Response:
        """Drops an image and its embedding from the cache."""
        if not state.cache.remove(image_id):
            raise UnknownImage(image_id)
        return Response(status_code=204)

    @app.post(UPLOAD_PATH + "/{image_id}/regions", response_model=RegionsOut, tags=["regions"],
              responses=error_responses(400, 403, 404, 413, 422, 500))
    async def regions(image_id: str, body: RegionsRequest) -> dict:
        """One region per prompt: mask (COCO RLE), box, predicted IoU, concepts, caption.
        Requests arriving together for the same image share one decoder batch."""
        entry = state.image(image_id)
        if len(body.prompts) > settings.max_prompts:
            raise ServeError(f"{len(body.prompts)} prompts; the limit is {settings.max_prompts} per request")
        if body.top_k > settings.max_top_k:
            raise ServeError(f"top_k is {body.top_k}; the limit is {settings.max_top_k}")
        prompts = [parse_prompt(i, p.model_dump(exclude_none=True), entry) for i, p in enumerate(body.prompts)]
        found = await state.batcher.predict(entry, prompts, body.top_k, body.captions)
        return await state.regions_json(entry, found)

    @app.post(UPLOAD_PATH + "/{image_id}/everything", response_model=RegionsOut, tags=["regions"],
              responses=error_responses(400, 403, 404, 413, 422, 500, 501))
    async def everything_regions(image_id: str) -> dict:
        """Automatic mode: regions for everything in the image (501 where not installed)."""
        entry = state.image(image_id)
        generate = state.everything
        if generate is None:
            raise NotAvailable("automatic mode (tapkit.everything) is turned off in this server")
        decoded = await state.off_loop(decode_image, entry.upload, len(entry.upload), settings.max_pixels)
        found = await worker.run(worker.everything, generate, entry.embedding, decoded.rgb)
        return await state.regions_json(entry, found)

    @app.post(UPLOAD_PATH + "/{image_id}/segment", response_model=SegmentOut, tags=["regions"],
              responses=error_responses(400, 403, 404, 413, 422, 500, 501))
    async def segment(image_id: str, body: SegmentRequest) -> dict:
        """Open-vocabulary semantic segmentation: every pixel labelled with one of the given
        class names; per class its area, score and COCO RLE mask (501 without a segmenter)."""
        entry = state.image(image_id)
        if state.segmenter is None:
            raise NotAvailable("this server has no segmenter (start it with tapkit serve --segmenter)")
        classes = check_classes(body.classes)
        decoded = await state.off_loop(decode_image, entry.upload, len(entry.upload), settings.max_pixels)
        result = await worker.run(state.segmenter.segment, decoded.rgb, classes)
        data = await state.off_loop(segmentation_json, result)
        return {"image": {"id": entry.id, "width": entry.width, "height": entry.height}, "classes": data["classes"]}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def parse_prompt(index: int, data: dict, entry: CachedImage) -> Prompt:
    """Validates one prompt against the image; the message says which prompt is wrong."""
    try:
        prompt = Prompt.from_dict(data)
        encode_prompt(prompt, entry.width, entry.height)
    except PromptError as err:
        raise PromptError(f"prompt {index}: {err}") from None
    return prompt


def add_error_handlers(app: FastAPI) -> None:
    """Every error is {"detail": "one line"}; internals never reach the client."""

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        status = err.status_code if isinstance(err, ServeError) else 422
        return JSONResponse({"detail": str(err)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(err.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        headers = dict(err.headers or {})
        if err.status_code == 405:
            # Starlette names only the first route that matched the path; list them all.
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return JSONResponse({"detail": str(err.detail)}, status_code=err.status_code, headers=headers)

    @app.exception_handler(ModelFailure)
    async def model_failure(request: Request, err: ModelFailure) -> JSONResponse:
        return JSONResponse({"detail": "internal error while running the model; see the server log"}, status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=err)
        return JSONResponse({"detail": "internal server error; see the server log"}, status_code=500)


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """Every method some route serves at this request's path."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def validation_message(errors) -> str:
    """FastAPI's validation errors as one line: 'body.prompts[0].box: Input should be a valid list'."""
    parts = []
    for e in list(errors)[:3]:
        where = ""
        for item in e.get("loc", ()):
            where += f"[{item}]" if isinstance(item, int) else (f".{item}" if where else str(item))
        message = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            where, message = "body", f"invalid JSON ({e.get('ctx', {}).get('error', 'cannot parse')})"
        parts.append(f"{where}: {message}" if where else message)
    extra = len(list(errors)) - 3
    return "; ".join(parts) + (f" (and {extra} more)" if extra > 0 else "")

