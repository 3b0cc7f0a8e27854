"""Batch jobs: the automatic mode over folders or file lists.

One result file per image (written atomically), so a job can stop at any point and
be resumed: images whose result exists are skipped. Under torchrun, rank r of w
takes images[r::w] of the sorted list, so ranks never share an image and a rank
that dies loses nothing already written. Unreadable images are reported and
skipped. An optional JSONL index lists every image of the run with its status."""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from tapkit.errors import UserError
from tapkit.everything.generator import EverythingGenerator, EverythingResult
from tapkit.inputs.image import read_image
from tapkit.runtime import Runtime
from tapkit.utils.atomic import write_text_atomic, write_with
from tapkit.utils.overlay import draw_overlay

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
INDEX_PARTS = ".index-parts"


@dataclass(frozen=True)
class ImageJob:
    """An input image and its key: its path relative to the run's root folder, which
    names its outputs (KEY.json, KEY.overlay.png) inside the output folder."""

    path: Path
    key: str

    def result_path(self, out_dir: Path) -> Path:
        return out_dir / f"{self.key}.json"

    def overlay_path(self, out_dir: Path) -> Path:
        return out_dir / f"{self.key}.overlay.png"


@dataclass
class BatchSummary:
    """What one rank did: images assigned to it, already done before (skipped),
    processed now, failed (path, reason), regions written, seconds."""

    assigned: int = 0
    already_done: int = 0
    processed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    regions: int = 0
    seconds: float = 0.0


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def read_file_list(path: str | os.PathLike) -> list[Path]:
    """One image path per line; blank lines and lines starting with # are ignored;
    relative paths are relative to the list file's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file list not found: {path}")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"file list {path} is not a text file") from None
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]


def collect_images(
    images: Sequence[str | os.PathLike] = (),
    input_dir: str | os.PathLike | None = None,
    file_list: str | os.PathLike | None = None,
    exclude: str | os.PathLike | None = None,
) -> list[ImageJob]:
    """The sorted, de-duplicated jobs of a run. Explicit images must exist; images of a
    file list that are missing fail later, one at a time; input_dir is searched
    recursively for image extensions, skipping anything under `exclude`."""
    paths: list[Path] = []
    for image in images:
        if not Path(image).is_file():
            raise UserError(f"image not found: {image}")
        paths.append(Path(image))
    if file_list is not None:
        paths += read_file_list(file_list)
    roots = [Path(os.path.abspath(p)).parent for p in paths]
    if input_dir is not None:
        folder = Path(input_dir)
        if not folder.is_dir():
            raise UserError(f"input folder not found: {folder}")
        skip = Path(exclude).resolve() if exclude is not None else None
        found = [p for p in folder.rglob("*") if _is_image(p) and p.is_file()]
        paths += [p for p in found if skip is None or not p.resolve().is_relative_to(skip)]
        roots.append(Path(os.path.abspath(folder)))
    if not paths:
        raise UserError("no images: give image files, --input-dir or --file-list")
    root = Path(os.path.commonpath(roots))
    jobs = {}
    # keys come from absolute paths (a symlink keeps its own name); of two paths to one
    # file, the first in sorted order is kept
    for p in sorted(paths, key=os.path.abspath):
        jobs.setdefault(p.resolve(), ImageJob(p, Path(os.path.abspath(p)).relative_to(root).as_posix()))
    return sorted(jobs.values(), key=lambda job: job.key)


def _read(job: ImageJob):
    try:
        return read_image(job.path)
    except UserError as err:
        return err


def write_result(job: ImageJob, out_dir: Path, result: EverythingResult, rgb: np.ndarray, overlay: bool) -> None:
    if overlay:  # the overlay first: the JSON marks the image done
        largest_first = sorted(result.regions, key=lambda r: -r.area)  # small regions stay visible
        image = draw_overlay(rgb, [r.mask for r in largest_first], [r.concept or "region" for r in largest_first])
        write_with(job.overlay_path(out_dir), lambda tmp: image.save(tmp, format="PNG"))
    text = json.dumps(result.to_json(str(job.path)), separators=(",", ":"))
    write_text_atomic(job.result_path(out_dir), text + "\n")


@dataclass(frozen=True)
class JobOutcome:
    """What processing one image gave: `count` things written (regions, classes present)
    and the image size."""

    count: int
    height: int
    width: int


# (job, RGB array) -> outcome; writes the job's outputs, its KEY.json last (it marks the job done).
ProcessFn = Callable[[ImageJob, np.ndarray], JobOutcome]


def run_batch(
    generator: EverythingGenerator,
    jobs: Sequence[ImageJob],
    out_dir: str | os.PathLike,
    runtime: Runtime = Runtime(),
    overlay: bool = False,
    overwrite: bool = False,
    index_parts: bool = False,
    progress: bool = True,
) -> BatchSummary:
    """The automatic mode over `jobs` (see `run_jobs`)."""
    out = Path(out_dir)

    def process(job: ImageJob, rgb: np.ndarray) -> JobOutcome:
        result = generator.generate(rgb)
        write_result(job, out, result, rgb, overlay)
        return JobOutcome(len(result.regions), result.height, result.width)

    return run_jobs(process, jobs, out_dir, runtime, overwrite, index_parts, progress, "everything")


def run_jobs(
    process: ProcessFn,
    jobs: Sequence[ImageJob],
    out_dir: str | os.PathLike,
    runtime: Runtime = Runtime(),
    overwrite: bool = False,
    index_parts: bool = False,
    progress: bool = True,
    desc: str = "images",
) -> BatchSummary:
    """Runs this rank's slice of `jobs` through `process`, skipping images already done
    (their KEY.json exists) unless `overwrite`. With `index_parts`, appends one JSON line
    per image to out_dir/.index-parts/."""
    out_dir = Path(out_dir)
    start = time.perf_counter()
    mine = runtime.shard(jobs)
    todo = [job for job in mine if overwrite or not job.result_path(out_dir).is_file()]
    summary = BatchSummary(assigned=len(mine), already_done=len(mine) - len(todo))
    part = out_dir / INDEX_PARTS / f"rank{runtime.rank}-of-{runtime.world_size}.jsonl" if index_parts else None
    if part is not None:
        part.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or runtime.rank != 0, file=sys.stderr)
    with ThreadPoolExecutor(max_workers=1) as reader:
        upcoming = reader.submit(_read, todo[0]) if todo else None
        for i, job in enumerate(todo):
            rgb = upcoming.result()
            upcoming = reader.submit(_read, todo[i + 1]) if i + 1 < len(todo) else None
            if isinstance(rgb, UserError):
                summary.failed.append((str(job.path), str(rgb)))
                tqdm.write(f"rank {runtime.rank}: skipped {job.path}: {rgb}", file=sys.stderr)
                line = {"image": str(job.path), "key": job.key, "status": "failed", "error": str(rgb)}
            else:
                began = time.perf_counter()
                try:
                    outcome = process(job, rgb)
                except Exception:
                    tqdm.write(f"rank {runtime.rank}: error while processing {job.path}", file=sys.stderr)
                    raise
                summary.processed += 1
                summary.regions += outcome.count
                line = {
                    "image": str(job.path),
                    "key": job.key,
                    "status": "done",
                    "result": job.result_path(out_dir).relative_to(out_dir).as_posix(),
                    "height": outcome.height,
                    "width": outcome.width,
                    "regions": outcome.count,
                    "seconds": round(time.perf_counter() - began, 4),
                }
            if part is not None:
                with part.open("a") as f:
                    f.write(json.dumps({**line, "rank": runtime.rank, "time": time.time()}) + "\n")
            bar.update(1)
            bar.set_postfix(regions=summary.regions, failed=len(summary.failed), refresh=False)
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _index_lines(out_dir: Path) -> dict[str, dict]:
    """The latest line per image key over every rank's part file (a line cut short by
    a crash is ignored)."""
    latest: dict[str, dict] = {}
    for part in sorted((out_dir / INDEX_PARTS).glob("*.jsonl")):
        for text in part.read_text().splitlines():
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue
            key = line.get("key")
            if key is not None and (key not in latest or line.get("time", 0) >= latest[key].get("time", 0)):
                latest[key] = line
    return latest


def write_index(jobs: Sequence[ImageJob], out_dir: str | os.PathLike, index_path: str | os.PathLike,
                count_of: Callable[[dict], int] = lambda data: len(data["regions"])) -> dict[str, int]:
    """One JSON line per job, in job order: status done (with result file and region
    count), failed (with the reason) or missing (not processed yet). Images done by an
    earlier run without an index are read back from their result file.
    `count_of` reads the count from such a result file. Returns the count of each status."""
    out_dir = Path(out_dir)
    latest = _index_lines(out_dir)
    lines, counts = [], {"done": 0, "failed": 0, "missing": 0}
    for job in jobs:
        result = job.result_path(out_dir)
        line = latest.get(job.key)
        if result.is_file():
            if line is None or line.get("status") != "done":
                data = json.loads(result.read_text())
                line = {
                    "image": str(job.path),
                    "key": job.key,
                    "status": "done",
                    "result": result.relative_to(out_dir).as_posix(),
                    "height": data["image"]["height"],
                    "width": data["image"]["width"],
                    "regions": count_of(data),
                }
        elif line is None or line.get("status") != "failed":
            line = {"image": str(job.path), "key": job.key, "status": "missing"}
        counts[line["status"]] += 1
        lines.append(json.dumps(line))
    write_text_atomic(index_path, "".join(text + "\n" for text in lines))
    return counts
