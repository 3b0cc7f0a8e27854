"""The inference loop shared by all benchmarks: this rank's images, skipping those
already saved, one record per image appended to the rank's shard file, then the
records of all ranks gathered on rank 0."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from tapkit.evaluation.data import ImageItem
from tapkit.evaluation.store import PredictionStore
from tapkit.inputs.image import read_image
from tapkit.runtime import Runtime

# Image -> JSON-ready record of that image's predictions (without "image_id").
InferFn = Callable[[ImageItem, np.ndarray], dict]


@dataclass
class InferenceRun:
    """records: image id -> record for every image of the run, on rank 0 only (None elsewhere).
    resumed: images found already saved; inferred: images run now (all ranks)."""

    records: dict | None
    resumed: int
    inferred: int
    seconds: float
    processes: int

    def timing(self, scoring_seconds: float | None = None) -> dict:
        out = {"inference_s": round(self.seconds, 3), "images_inferred": self.inferred, "images_resumed": self.resumed, "processes": self.processes}
        if scoring_seconds is not None:
            out["scoring_s"] = round(scoring_seconds, 3)
        return out


def read_ahead(items: Iterable[ImageItem], depth: int = 2) -> Iterator[tuple[ImageItem, np.ndarray]]:
    """Yields (item, RGB array), decoding the next images in a thread while the model runs."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        source = iter(items)
        pending: deque = deque()
        for item in source:
            pending.append((item, pool.submit(read_image, item.path)))
            if len(pending) >= depth:
                break
        while pending:
            item, future = pending.popleft()
            following = next(source, None)
            if following is not None:
                pending.append((following, pool.submit(read_image, following.path)))
            yield item, future.result()


def run_images(items: Sequence[ImageItem], infer: InferFn, ctx: Runtime, store: PredictionStore, desc: str) -> InferenceRun:
    """Runs `infer` on this rank's unsaved images, then gathers everything on rank 0."""
    start = time.perf_counter()
    done = store.done_ids()
    resumed = sum(item.image_id in done for item in items)
    todo = [item for item in ctx.shard(items) if item.image_id not in done]
    if ctx.distributed:
        desc = f"{desc} (rank 0 of {ctx.world_size})"
    with tqdm(total=len(todo), desc=desc, unit="img", disable=not ctx.is_main, dynamic_ncols=True) as bar:
        for item, rgb in read_ahead(todo):
            store.append({"image_id": item.image_id, **infer(item, rgb)})
            bar.update()
    ctx.barrier()
    records = store.read_all() if ctx.is_main else None
    return InferenceRun(records, resumed, len(items) - resumed, time.perf_counter() - start, ctx.world_size)
