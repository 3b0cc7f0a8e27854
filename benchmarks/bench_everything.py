"""Benchmark of the automatic mode ("tokenize everything").

Measures, for a preset with random weights (default: tap_vit_b at 1024 input):
  1. end-to-end images per second of `tapkit everything` over a folder (reading,
     all stages, RLE + JSON writing), and the share of time per stage;
  2. captions of the kept regions in one batch vs one region at a time;
  3. the image encoder's FLOPs and the throughput it reaches.
Prints a table and appends it to benchmarks/RESULTS.md with the machine and settings.

Random weights: masks, scores and captions mean nothing, so the filters are opened
(every candidate passes the IoU and stability thresholds, which is the costliest case
for filtering). Random masks nearly all cover the whole image, so box NMS at SAM's 0.7
would keep one region; --nms-thresh defaults to 1.0 (no suppression) and --max-regions
fixes how many regions are named and captioned.
Random text decoders rarely emit EOS, so every caption runs to the full 38 tokens
(the worst case). A stand-in tokenizer turns ids into text (a negligible cost).

    PYTHONPATH=src python benchmarks/bench_everything.py --images 1 --points-per-side 32
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import tapkit
from tapkit.everything import EverythingConfig, EverythingGenerator, collect_images, run_batch
from tapkit.models.tap.concepts import ConceptVocabulary

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
STAGES = ("encode", "decode", "filter", "postprocess", "concepts", "captions")


class StandInTokenizer:
    """Ids -> text without a SentencePiece model of the preset's 32k vocabulary."""

    def __init__(self, n_words: int):
        self.n_words, self.bos_id, self.eos_id = n_words, 1, 2

    def decode(self, ids: list[int]) -> str:
        return " ".join(f"w{i}" for i in ids)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine(device: torch.device, load_at_start: float) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    load = f"load average {load_at_start:.1f} at the start, {load_average():.1f} at the end"
    return f"{cpu_name()}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads, {load}, torch {torch.__version__}"


def synthetic_images(folder: Path, count: int, height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        image = (rng.random((height // 8, width // 8, 3)) * 255).astype(np.uint8)
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
        Image.fromarray(image).save(folder / f"image{i:03d}.jpg", quality=90)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def end_to_end(model, config: EverythingConfig, folder: Path, out: Path) -> dict:
    generator = EverythingGenerator(model, config)
    kept_tokens: list[torch.Tensor] = []
    caption = generator._caption

    def recording_caption(regions, sem_tokens):  # keeps the first image's kept tokens for the caption comparison
        if not kept_tokens:
            kept_tokens.append(sem_tokens.clone())
        caption(regions, sem_tokens)

    generator._caption = recording_caption
    jobs = collect_images(input_dir=folder)
    start = time.perf_counter()
    summary = run_batch(generator, jobs, out, progress=False)
    wall = time.perf_counter() - start
    assert summary.processed == len(jobs) and not summary.failed
    stages = dict.fromkeys(STAGES, 0.0)
    counts = []
    for job in jobs:
        data = json.loads(job.result_path(out).read_text())
        for stage in STAGES:
            stages[stage] += data["timings"][stage]
        counts.append(data["counts"])
    return {"images": len(jobs), "wall": wall, "stages": stages, "counts": counts, "kept_tokens": kept_tokens[0]}


@torch.inference_mode()
def caption_comparison(model, sem_tokens: torch.Tensor, device) -> dict:
    predictor = tapkit.Predictor(model)
    batched: list[str] = []
    single: list[str] = []
    t_batch = timed(lambda: batched.extend(predictor.caption(sem_tokens)), device)
    t_single = timed(lambda: single.extend(t for i in range(len(sem_tokens)) for t in predictor.caption(sem_tokens[i : i + 1])), device)
    # identical in float32; in bfloat16 batch-size-dependent rounding can flip near-tied greedy steps
    same = sum(a == b for a, b in zip(batched, single))
    return {"regions": len(sem_tokens), "batched": t_batch, "single": t_single, "identical": same}


def counted_flops(fn) -> int:
    """FLOPs of `fn()`. FlopCounterMode records 0 for PyTorch's fused CPU attention kernel,
    so the count runs on the math backend, whose matmuls it sees (same FLOPs)."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return counter.get_total_flops()


@torch.inference_mode()
def encoder_throughput(model, device) -> dict:
    size = model.image_size
    image = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8)
    flops = counted_flops(lambda: model.encode_image(image))
    seconds = timed(lambda: model.encode_image(image), device)
    return {"flops": flops, "seconds": seconds}


@torch.inference_mode()
def decoder_flops_per_point(model, config: EverythingConfig) -> float:
    predictor = tapkit.Predictor(model)
    predictor.set_image(np.zeros((64, 64, 3), np.uint8))
    points = np.random.default_rng(0).random((config.points_per_batch, 2)).astype(np.float32) * 64
    return counted_flops(lambda: predictor.decode_all(model.protocol.click_prompts(points[:, None, :]))) / len(points)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tap_vit_b")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--masks-per-point", default="all", choices=("all", "best"))
    p.add_argument("--max-regions", type=int, default=64)
    p.add_argument("--nms-thresh", type=float, default=1.0, help="box NMS threshold (default 1.0: off, see above)")
    p.add_argument("--skip-encoder", action="store_true", help="skip the encoder FLOPs measurement")
    p.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    p.add_argument("--note", default="", help="a line to add to the RESULTS.md entry")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    load_at_start = load_average()
    model = tapkit.build_model(args.preset, device=device, dtype=args.dtype)
    model.tokenizer = StandInTokenizer(model.cfg.text_decoder.vocab_size)
    gen = torch.Generator().manual_seed(0)
    dim = model.cfg.image_decoder.sem_embed_dim
    model.concepts = ConceptVocabulary(torch.randn(dim, 2560, generator=gen), [f"concept{i}" for i in range(2560)])
    config = EverythingConfig(
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        masks_per_point=args.masks_per_point,
        pred_iou_thresh=-float("inf"),
        stability_thresh=0.0,
        box_nms_thresh=args.nms_thresh,
        max_regions=args.max_regions,
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "images", Path(tmp) / "out"
        folder.mkdir()
        synthetic_images(folder, args.images, args.height, args.width)
        if device.type == "cuda":  # library initialisation and autotuning stay out of the timings
            warm = EverythingConfig(points_per_side=2, pred_iou_thresh=-float("inf"), stability_thresh=0.0, max_regions=2)
            EverythingGenerator(model, warm).generate(np.asarray(Image.open(sorted(folder.iterdir())[0]).convert("RGB")))
        e2e = end_to_end(model, config, folder, out)
    captions = caption_comparison(model, e2e["kept_tokens"], device)
    encoder = None if args.skip_encoder else encoder_throughput(model, device)
    decoder_flops = decoder_flops_per_point(model, config)

    n = e2e["images"]
    staged = sum(e2e["stages"].values())
    other = max(0.0, e2e["wall"] - staged)
    counts = e2e["counts"][0]
    lines = [
        f"## bench_everything, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {machine(device, load_at_start)}",
        f"- model: {args.preset} (random weights), {model.image_size} input, {args.dtype}, device {device}",
        f"- settings: {n} image(s) of {args.width}x{args.height} (JPEG), {args.points_per_side}x{args.points_per_side} points, "
        f"batch {args.points_per_batch}, masks per point: {args.masks_per_point}, filters open, box NMS {args.nms_thresh}, "
        f"max {args.max_regions} regions, top-5 of 2560 concepts, captions up to 38 tokens",
        f"- candidates per image {counts['candidates']}, after NMS {counts['after_nms']}, kept (named + captioned) {counts['kept']}",
    ]
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += [
        "",
        f"End to end: **{n / e2e['wall']:.4f} images/s** ({e2e['wall'] / n:.2f} s per image)",
        "",
        "| stage | s per image | share |",
        "| --- | ---: | ---: |",
    ]
    for stage in STAGES:
        lines.append(f"| {stage} | {e2e['stages'][stage] / n:.3f} | {100 * e2e['stages'][stage] / e2e['wall']:.1f}% |")
    lines.append(f"| read + RLE + JSON write | {other / n:.3f} | {100 * other / e2e['wall']:.1f}% |")
    lines += [
        "",
        f"Captions for the {captions['regions']} kept regions of one image: one batch {captions['batched']:.2f} s, "
        f"one region at a time {captions['single']:.2f} s: **{captions['single'] / captions['batched']:.1f}x** "
        f"({captions['identical']} of {captions['regions']} captions identical).",
    ]
    if encoder is not None:
        lines += [
            "",
            f"Encoder: {encoder['flops'] / 1e9:.0f} GFLOP per image (FlopCounterMode), {encoder['seconds']:.2f} s "
            f"-> {encoder['flops'] / encoder['seconds'] / 1e12:.3f} TFLOP/s achieved.",
        ]
    points = counts["points"]
    lines += [
        "",
        f"Mask decoder: {decoder_flops / 1e9:.2f} GFLOP per point, {points * decoder_flops / 1e12:.2f} TFLOP per image at "
        f"{points} points -> {points * decoder_flops / max(e2e['stages']['decode'] / n, 1e-9) / 1e12:.3f} TFLOP/s achieved.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_results:
        header = "" if RESULTS.is_file() else "# Benchmark results\n\nAppended by the scripts in benchmarks/; newest last.\n\n"
        with RESULTS.open("a") as f:
            f.write(header + text + "\n")


if __name__ == "__main__":
    main()
