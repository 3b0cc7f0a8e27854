"""Predictor speed and memory: image encoding, prompt decoding at several batch
sizes, captioning per region, peak memory. Random weights of a named preset at
the real input size (speed does not depend on the weights).

    python benchmarks/bench_predictor.py --preset tap_vit_b --device cpu
    python benchmarks/bench_predictor.py --preset tap_vit_b --device cuda --dtype bfloat16

Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_results, machine, markdown_table, peak_memory_mb, time_it  # noqa: E402

import tapkit  # noqa: E402
from tapkit.inputs.prompts import Prompt, encode_prompt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tap_vit_b")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batches", default="1,16,64", help="prompt batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--caption-tokens", default="12,38", help="caption lengths to time (12 ~ a typical region caption, 38 = the maximum)")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = tapkit.build_model(args.preset, device=device, dtype=args.dtype)
    predictor = tapkit.Predictor(model, max_batch=max(int(b) for b in args.batches.split(",")))
    rng = np.random.default_rng(0)
    image = (rng.random((768, 1024, 3)) * 255).astype(np.uint8)  # a 4:3 photo, resized to 1024 x 768

    encode_s = time_it(lambda: predictor.set_image(image), device, args.repeats)
    h, w = image.shape[:2]
    lengths = [int(n) for n in args.caption_tokens.split(",")]
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        prompts = [Prompt(points=[(float(rng.integers(0, w)), float(rng.integers(0, h)), 1)]) for _ in range(batch)]
        points = np.stack([encode_prompt(p, w, h) for p in prompts])

        def decode():
            decoded = predictor.decode_points(points)
            predictor.upscale_masks(decoded.mask_logits)
            return decoded

        decode_s = time_it(decode, device, args.repeats)
        tokens = decode().sem_tokens.unsqueeze(1)
        caption_s = {}
        for length in lengths:
            # eos_id=-1 never fires: every caption runs exactly `length` tokens.
            caption_s[length] = time_it(
                lambda: model.text_decoder.generate(tokens, bos_id=1, eos_id=-1, max_new_tokens=length),
                device,
                args.repeats,
            )
        total = decode_s + caption_s[lengths[0]]
        rows.append(
            [str(batch), f"{decode_s * 1e3 / batch:.1f}"]
            + [f"{caption_s[n] * 1e3 / batch:.1f}" for n in lengths]
            + [f"{total:.3f}", f"{total / encode_s:.2f}"]
        )
    header = (
        ["prompts", "decode+masks ms/prompt"]
        + [f"caption ms/region ({n} tok)" for n in lengths]
        + [f"batch total s ({lengths[0]}-tok captions)", "batch / encode"]
    )
    table = markdown_table(header, rows)
    mem = peak_memory_mb(device)
    settings = (
        f"- machine: {machine(device)}\n- model: {args.preset} (random weights), dtype {args.dtype}, device {args.device}\n"
        f"- image 1024x768 -> 1024 input; single-point prompts; masks upscaled to the original size; "
        f"captions of exactly {args.caption_tokens} tokens\n"
        f"- image encoding: **{encode_s:.3f} s**; peak memory: {mem:.0f} MB "
        f"({'CUDA allocated' if device.type == 'cuda' else 'process max RSS'})"
    )
    print(settings)
    print(table)
    if not args.no_record:
        append_results(f"Predictor, {args.preset}, {args.device}, {args.dtype}", settings, table)


if __name__ == "__main__":
    main()
