"""The model worker: all model work runs on one thread, off the event loop, one job at
a time. One thread because the model (and torch's own intra-op thread pool) is shared:
jobs queue rather than compete, and the event loop keeps answering other requests."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import numpy as np

from tapkit.errors import UserError
from tapkit.models.interface import PromptableModel
from tapkit.predictor.predictor import ImageEmbedding, Predictor
from tapkit.inputs.prompts import Prompt
from tapkit.predictor.results import Region
from tapkit.serve.everything import EverythingFn, JsonRegion
from tapkit.serve.errors import ModelFailure

log = logging.getLogger("tapkit.serve")

T = TypeVar("T")


class ModelWorker:
    def __init__(self, model: PromptableModel, max_batch: int):
        self.model = model
        self._predictor = Predictor(model, max_batch=max_batch)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tapkit-model")

    async def run(self, job: Callable[..., T], *args) -> T:
        """Runs `job(*args)` on the model thread. A user error passes through; anything
        else is logged with its traceback and becomes a `ModelFailure`."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, job, *args)
        except UserError:
            raise
        except Exception as err:
            log.exception("model work failed")
            raise ModelFailure(type(err).__name__) from err

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # The jobs below run on the model thread (through `run`), never on the event loop.

    def embed(self, rgb: np.ndarray) -> ImageEmbedding:
        return self._predictor.embed_image(rgb)

    def predict(self, embedding: ImageEmbedding, prompts: Sequence[Prompt], top_k: int, captions: bool) -> list[Region]:
        self._predictor.set_embedding(embedding)
        return self._predictor.predict(prompts, top_k=top_k, captions=captions, embeddings=False)

    def everything(self, generate: EverythingFn, embedding: ImageEmbedding, rgb: np.ndarray) -> list[JsonRegion]:
        self._predictor.set_embedding(embedding)
        return generate(self._predictor, rgb)
