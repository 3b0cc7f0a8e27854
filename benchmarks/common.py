"""Shared helpers for benchmark scripts: timing, machine description, RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn` in seconds, after warm-up runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or "cpu"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return f"{name}; {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def append_results(title: str, settings: str, table: str, notes: str = "") -> None:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    block = f"\n## {title} ({stamp})\n\n{settings}\n\n{table}\n"
    if notes:
        block += f"\n{notes}\n"
    with open(RESULTS, "a") as f:
        f.write(block)
