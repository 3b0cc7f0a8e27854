"""Packages a SAN trained by stage `san` as tapkit's default open-vocabulary segmenter:
src/tapkit/assets/san/ with model.safetensors (float16, the SanConfig in its metadata)
and the CLIP tokenizer (vocab.json, merges.txt), which `tapkit.load_segmenter()` loads.
`--out` writes it elsewhere (e.g. to measure a run's mid-training checkpoint).

    python scripts/package_san.py runs/san_synthetic/model.safetensors --tokenizer src/tapkit/assets/clip
    python scripts/package_san.py runs/san_synthetic --tokenizer src/tapkit/assets/clip --out scratch/san_mid
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

import tapkit
from tapkit.checkpoint.io import save_safetensors
from tapkit.defaults import ASSETS
from tapkit.models.san.config import SanConfig
from tapkit.models.san.model import SanModel
from tapkit.training.checkpoint import load_train_state

LIMIT_BYTES = 8 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path, help="the stage's exported .safetensors, or its run folder (checkpoint.pt)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="the folder with the CLIP's vocab.json + merges.txt")
    parser.add_argument("--out", type=Path, default=ASSETS / "san")
    args = parser.parse_args()
    if args.weights.is_dir():
        state = load_train_state(args.weights)
        model = SanModel(SanConfig.from_dict(state.tap_config))
        model.load_state_dict(state.model)
        print(f"training checkpoint at step {state.step}")
    else:
        model = tapkit.load_model(args.weights)
    args.out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_safetensors(tensors, args.out / "model.safetensors", config=model.cfg.to_dict())
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(args.tokenizer / name, args.out / name)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    if size > LIMIT_BYTES:
        raise SystemExit(f"{args.out} is {size / 2**20:.1f} MB, over the {LIMIT_BYTES / 2**20:.0f} MB package limit")
    print(f"wrote {args.out} ({size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
