"""Load test of `tapkit serve` over real HTTP on this machine: upload latency (the image
encoder), single-request /regions latency, and throughput with many concurrent clients
prompting the same image, with cross-request batching off and on.

    python benchmarks/serve_load.py                      # the tiny random test model
    python benchmarks/serve_load.py --preset tap_vit_b   # a random ViT-B (no captions)

Prints a table and appends it to benchmarks/RESULTS.md with the machine described."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn
from PIL import Image
from tqdm import tqdm

import tapkit
from tapkit.serve import ServeSettings, create_app
from tapkit.testing import make_tiny_model_files

RESULTS = Path(__file__).parent / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.1f} at start (shared machine)" if hasattr(os, "getloadavg") else ""
    return f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}{load}"


def picture(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    rgb = (rng.random((height, width, 3)) * 60 + 150).astype(np.uint8)
    rgb[height // 4 : height * 3 // 4, width // 5 : width // 2] = (220, 40, 40)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class Server:
    """uvicorn on a free localhost port, in a background thread."""

    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000.0


async def measure(url: str, args, captions: bool) -> dict:
    out = {}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        data = picture(args.width, args.height)
        times = []
        for _ in tqdm(range(args.uploads), desc="uploads", leave=False):
            start = time.perf_counter()
            response = await client.post("/v1/images", files={"file": ("x.jpg", data, "image/jpeg")})
            response.raise_for_status()
            times.append(time.perf_counter() - start)
        image_id = response.json()["id"]
        out["upload_ms"] = statistics.median(times) * 1000.0
        rng = np.random.default_rng(0)

        def body():
            x, y = rng.uniform(0, args.width), rng.uniform(0, args.height)
            return {"prompts": [{"points": [[float(x), float(y), 1]]}], "captions": captions}

        url_regions = f"/v1/images/{image_id}/regions"
        for _ in range(5):  # warm-up
            (await client.post(url_regions, json=body())).raise_for_status()
        times = []
        for _ in tqdm(range(args.sequential), desc="sequential", leave=False):
            start = time.perf_counter()
            (await client.post(url_regions, json=body())).raise_for_status()
            times.append(time.perf_counter() - start)
        out["single_p50_ms"], out["single_p95_ms"] = pct(times, 50), pct(times, 95)

        latencies: list[float] = []

        async def one_client():
            for _ in range(args.requests_per_client):
                start = time.perf_counter()
                (await client.post(url_regions, json=body())).raise_for_status()
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(args.clients)))
        elapsed = time.perf_counter() - start
        out["throughput_rps"] = len(latencies) / elapsed
        out["conc_p50_ms"], out["conc_p95_ms"] = pct(latencies, 50), pct(latencies, 95)
    return out


def model_batching(model, width: int, height: int, n: int = 8, reps: int = 3) -> str:
    """What batching saves inside the model: n one-point prompts one by one vs together
    (same embedding, no HTTP), best of `reps`."""
    predictor = tapkit.Predictor(model)
    predictor.set_image(np.asarray(Image.open(io.BytesIO(picture(width, height))).convert("RGB")))
    rng = np.random.default_rng(1)
    prompts = [tapkit.Prompt(points=[(float(rng.uniform(0, width)), float(rng.uniform(0, height)), 1)]) for _ in range(n)]
    captions = model.tokenizer is not None
    alone, together = [], []
    for _ in range(reps):
        start = time.perf_counter()
        for prompt in prompts:
            predictor.predict([prompt], captions=captions, embeddings=False)
        alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        predictor.predict(prompts, captions=captions, embeddings=False)
        together.append(time.perf_counter() - start)
    a, t = min(alone) * 1000.0, min(together) * 1000.0
    return (
        f"| prompts | one by one (ms) | one batch (ms) | speed-up |\n| --- | --- | --- | --- |\n"
        f"| {n} x 1 point{', captions' if captions else ''} | {a:.0f} | {t:.0f} | {a / t:.1f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="a random model of this preset instead of the tiny test model (no captions)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--uploads", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=40)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=8)
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    described = machine()

    if args.preset:
        model, name, caption_modes = tapkit.build_model(args.preset, device=args.device), f"random {args.preset}", [False]
    else:
        files = make_tiny_model_files(tempfile.mkdtemp())
        model = tapkit.load_model(files.checkpoint, tokenizer=files.tokenizer, concepts=files.concepts, device=args.device)
        name, caption_modes = "tiny test model", [False, True]

    rows = []
    for captions in caption_modes:
        for label, settings in (
            ("off", ServeSettings(max_batch_prompts=1)),
            ("on, 0 ms window", ServeSettings(batch_window_ms=0)),
            ("on, 2 ms window", ServeSettings(batch_window_ms=2)),
        ):
            app = create_app(model, settings, everything=None)
            with Server(app) as url:
                result = asyncio.run(measure(url, args, captions))
            stats = app.state.tapkit.batcher.stats()
            app.state.tapkit.worker.close()
            result["prompts_per_call"] = (stats.requests / stats.batches) if stats.batches else 0.0
            rows.append((captions, label, result))

    header = (
        "| captions | batching | upload (ms) | 1 client p50 / p95 (ms) | "
        f"{args.clients} clients p50 / p95 (ms) | req/s | requests per model call |"
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    for captions, label, r in rows:
        lines.append(
            f"| {'yes' if captions else 'no'} | {label} | {r['upload_ms']:.0f} | {r['single_p50_ms']:.1f} / {r['single_p95_ms']:.1f} | "
            f"{r['conc_p50_ms']:.1f} / {r['conc_p95_ms']:.1f} | {r['throughput_rps']:.1f} | {r['prompts_per_call']:.2f} |"
        )
    table = "\n".join(lines)
    title = (
        f"## serve_load: {name} on {args.device}, {args.width}x{args.height} JPEG, one point per request "
        f"({datetime.now(timezone.utc):%Y-%m-%d})"
    )
    text = f"{title}\n\nMachine: {described}\n\n{table}\n\nIn the model alone:\n\n{model_batching(model, args.width, args.height)}\n"
    print(text)
    if not args.no_append:
        with RESULTS.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
