"""The image encoder's share of this CPU's single-core matmul rate.

    PYTHONPATH=src python benchmarks/bench_encoder_rate.py --preset tap_vit_b

FLOPs are counted with FlopCounterMode on the math attention backend (it records 0 for
PyTorch's fused CPU attention kernel); the encoder and a 4096x768x3072 matmul (the size
of the ViT-B MLP) are timed alternately in CPU time of the calling thread (one thread:
on a shared machine wall time is mostly waiting for a core). Prints GFLOP/s of both and
the fraction encoder / matmul.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import tapkit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tap_vit_b", help="tap_vit_b, sam_vit_b, ... (random weights)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = tapkit.build_model(args.preset)
    size = model.image_size
    shape = (1, size, size, 3) if model.family == "tap" else (1, 3, size, size)
    image = torch.randint(0, 256, shape, dtype=torch.uint8)
    a, w = torch.randn(4096, 768), torch.randn(3072, 768)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            model.encode_image(image)
        flops = counter.get_total_flops()
        model.encode_image(image)
        encode, matmul = [], []
        for _ in range(args.rounds):
            start = time.thread_time()
            model.encode_image(image)
            encode.append(time.thread_time() - start)
            start = time.thread_time()
            for _ in range(5):
                torch.nn.functional.linear(a, w)
            matmul.append((time.thread_time() - start) / 5)
    enc_rate = flops / statistics.median(encode)
    mm_rate = 2 * 4096 * 768 * 3072 / statistics.median(matmul)
    print(f"{args.preset}: {flops / 1e9:.0f} GFLOP per image; encoder {statistics.median(encode):.2f} s CPU = "
          f"{enc_rate / 1e9:.1f} GFLOP/s; matmul {mm_rate / 1e9:.1f} GFLOP/s; encoder at {enc_rate / mm_rate:.1%} of the matmul rate")


if __name__ == "__main__":
    main()
