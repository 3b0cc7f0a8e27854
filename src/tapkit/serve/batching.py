"""Micro-batching of /regions requests: prompts that arrive close together for the same
image and options share one model call (the decoder then runs them as one batch)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from tapkit.inputs.prompts import Prompt
from tapkit.predictor.results import Region
from tapkit.serve.cache import CachedImage
from tapkit.serve.worker import ModelWorker


@dataclass(frozen=True)
class BatchKey:
    image_id: str
    top_k: int
    captions: bool


@dataclass
class _Member:
    prompts: list[Prompt]
    future: asyncio.Future


@dataclass
class _Batch:
    entry: CachedImage
    members: list[_Member] = field(default_factory=list)
    size: int = 0
    closed: bool = False
    full: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class BatchStats:
    batches: int  # model calls made
    requests: int  # requests they served


class PromptBatcher:
    """The first request of a batch schedules it: after the batching window (sooner if
    the batch fills) the batch goes to the model worker. Requests keep joining until the
    worker actually starts on it, so while the model is busy, waiting requests gather into
    one batch instead of queueing one by one. Each request gets its own regions back."""

    def __init__(self, worker: ModelWorker, window_s: float, max_prompts: int):
        self.worker = worker
        self.window_s = window_s
        self.max_prompts = max_prompts
        self._pending: dict[tuple[asyncio.AbstractEventLoop, BatchKey], _Batch] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._batches = 0
        self._requests = 0

    async def predict(self, entry: CachedImage, prompts: list[Prompt], top_k: int, captions: bool) -> list[Region]:
        loop = asyncio.get_running_loop()
        key = (loop, BatchKey(entry.id, top_k, captions))
        member = _Member(list(prompts), loop.create_future())
        with self._lock:
            batch = self._pending.get(key)
            if batch is None or batch.closed or batch.size + len(prompts) > self.max_prompts:
                batch = _Batch(entry)
                self._pending[key] = batch
                task = loop.create_task(self._flush(key, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            batch.members.append(member)
            batch.size += len(prompts)
            if batch.size >= self.max_prompts:
                batch.full.set()
        return await member.future

    def pending_requests(self) -> int:
        """Requests waiting in batches the worker has not started yet."""
        with self._lock:
            return sum(len(b.members) for b in self._pending.values() if not b.closed)

    def stats(self) -> BatchStats:
        with self._lock:
            return BatchStats(self._batches, self._requests)

    async def _flush(self, key, batch: _Batch) -> None:
        if self.window_s > 0:
            try:
                await asyncio.wait_for(batch.full.wait(), self.window_s)
            except asyncio.TimeoutError:
                pass
        try:
            results = await self.worker.run(self._run, key, batch)
        except asyncio.CancelledError:
            for m in batch.members:
                m.future.cancel()
            raise
        except Exception as err:
            for m in batch.members:
                if not m.future.done():
                    m.future.set_exception(err)
            return
        for m, regions in zip(batch.members, results):
            if not m.future.done():
                m.future.set_result(regions)

    def _run(self, key, batch: _Batch) -> list[list[Region]]:
        """On the model thread: closes the batch to newcomers and predicts all its prompts."""
        with self._lock:
            batch.closed = True
            if self._pending.get(key) is batch:
                del self._pending[key]
            self._batches += 1
            self._requests += len(batch.members)
        bkey = key[1]
        prompts = [p for m in batch.members for p in m.prompts]
        regions = self.worker.predict(batch.entry.embedding, prompts, bkey.top_k, bkey.captions)
        out, start = [], 0
        for m in batch.members:
            out.append(regions[start : start + len(m.prompts)])
            start += len(m.prompts)
        return out
