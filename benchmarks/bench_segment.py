"""SAN inference per image next to the CLIP encode alone, side by side in one process,
alternating: the packaged SAN (or a checkpoint / preset with random weights at the real
input size, e.g. san_vit_b_16 at 640) labelling one image with a vocabulary, the same
model's CLIP image tower encoding the CLIP-resolution input alone, and the class
embeddings (text tower) once per vocabulary.

    python benchmarks/bench_segment.py                                 # packaged SAN, CPU
    python benchmarks/bench_segment.py --preset san_vit_b_16 --classes 150 --device cuda

Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_results, machine, markdown_table, sync  # noqa: E402

import tapkit  # noqa: E402
from tapkit.models.clip.tokenizer import ClipTokenizer  # noqa: E402
from tapkit.models.san.build import san_from_preset  # noqa: E402
from tapkit.segmenter.segmenter import Segmenter  # noqa: E402


class ByteTokenizer(ClipTokenizer):
    """Stand-in ids for a preset with random weights (speed does not depend on the text)."""

    def __init__(self):
        pass

    def __call__(self, texts, context_length):
        texts = [texts] if isinstance(texts, str) else texts
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [49406] + [min(b + 1, 49000) for b in t.encode()[: context_length - 2]] + [49407]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a SAN checkpoint or folder (default: the packaged SAN)")
    parser.add_argument("--preset", default=None, help="random weights of a preset instead (san_vit_b_16, san_vit_large_14)")
    parser.add_argument("--classes", type=int, default=49, help="vocabulary size")
    parser.add_argument("--size", type=int, default=None, help="image short side (default: the model's input size)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.preset:
        model = san_from_preset(args.preset).to(device, getattr(torch, args.dtype)).eval()
        segmenter = Segmenter(model, ByteTokenizer())
        what = f"{args.preset} (random weights)"
    else:
        segmenter = tapkit.load_segmenter(args.checkpoint, device=device, dtype=args.dtype)
        what = args.checkpoint or "packaged SAN"
    model = segmenter.model
    size = args.size or segmenter.input_size
    rng = np.random.default_rng(0)
    image = (rng.random((size, size * 4 // 3, 3)) * 255).astype(np.uint8)
    names = [f"class {i}" for i in range(args.classes)]
    x, _ = segmenter.preprocess(image)
    x = x.to(device, segmenter.dtype)
    clip_input = model.clip_input(x)

    def san():
        segmenter.segment(image, names)

    def clip_encode():
        with torch.inference_mode():
            model.clip.visual(clip_input)

    def vocabulary():
        segmenter.vocabulary = None
        segmenter.classifier(names)

    jobs = {"SAN segment (image -> label map)": san, "CLIP image tower alone": clip_encode,
            f"class embeddings ({args.classes} names, once per vocabulary)": vocabulary}
    for fn in jobs.values():
        fn()
    times = {k: [] for k in jobs}
    for _ in range(args.repeats):  # alternating, so load changes hit all alike
        for name, fn in jobs.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["CLIP image tower alone"]
    rows = [[k, f"{1000 * v:.1f}", f"{v / base:.2f}"] for k, v in med.items()]
    table = markdown_table(["step", "ms (median)", "/ CLIP alone"], rows)
    settings = (f"- machine: {machine(device)}\n- model: {what}, {args.dtype}, device {args.device}\n"
                f"- image {image.shape[1]}x{image.shape[0]} -> side input {tuple(x.shape[-2:])}, CLIP input "
                f"{tuple(clip_input.shape[-2:])}; {args.classes} classes; median of {args.repeats}, alternating")
    print(settings)
    print(table)
    if not args.no_record:
        append_results(f"SAN segment vs CLIP encode, {args.device}", settings, table)


if __name__ == "__main__":
    main()
