"""Where a stage `clip` training step goes: building the batch (JPEG decode, crops,
resizing, tokenizing; the data path) against the forward, backward and AdamW step
(compute), for one or more configs, on the real data the config names.

    python benchmarks/bench_clip_step.py configs/clip_synthetic.yaml configs/clip_san_regime.yaml \\
        --set clip.tokenizer=src/tapkit/assets/clip --set model.init_from=src/tapkit/assets/clip --steps 6

Prints a table and appends it to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import append_results, machine, markdown_table  # noqa: E402

from tapkit.training.config import load_config  # noqa: E402
from tapkit.training.stages import clip as stage  # noqa: E402


def measure(path: str, overrides: list[str], steps: int) -> list[str]:
    cfg = load_config(path, overrides)
    model = stage.build_model(cfg)
    batches = stage.make_batches(cfg, model, 0, 1)
    objective = stage.ClipObjective(model, cfg.clip.region_start, cfg.clip.patch_loss_weight)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-5)
    data, compute, samples = [], [], []
    for step in range(steps + 1):  # step 0 warms up
        start = time.perf_counter()
        batch = batches[step]
        built = time.perf_counter()
        objective(batch).total.backward()
        optimizer.step()
        optimizer.zero_grad()
        done = time.perf_counter()
        if step:
            data.append(built - start)
            compute.append(done - built)
            samples.append(batch.tokens.shape[0])
    d, c = statistics.median(data), statistics.median(compute)
    return [path, str(cfg.batch_images), f"{statistics.mean(samples):.0f}", f"{d:.3f}", f"{c:.3f}", f"{d / (d + c):.0%}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--set", action="append", default=[], help="a config override key.sub=value (every config)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = [measure(path, args.set, args.steps) for path in args.configs]
    header = ["config", "images / step", "samples / step", "data s / step", "compute s / step", "data share"]
    table = markdown_table(header, rows)
    print(table)
    if not args.no_append:
        load = os.getloadavg()[0]
        settings = (f"- machine: {machine(torch.device('cpu'))}; load average {load:.1f}\n"
                    f"- command: `python benchmarks/bench_clip_step.py {' '.join(args.configs)} "
                    + " ".join(f"--set {s}" for s in args.set) + f" --steps {args.steps}`\n"
                    "- medians over the steps after one warm-up step; data = building the batch in the "
                    "main process, compute = forward + backward + AdamW")
        append_results("stage clip: data path vs compute per step", settings, table)


if __name__ == "__main__":
    main()
