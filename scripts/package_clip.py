"""Packages a CLIP trained by stage `clip` as tapkit's default CLIP: an open_clip hub
folder (open_clip_config.json, float16 open_clip_model.safetensors, vocab.json,
merges.txt) under src/tapkit/assets/clip, which `tapkit.load_clip()` loads. `--out`
writes it elsewhere (e.g. to measure a run's mid-training checkpoint).

    python scripts/package_clip.py runs/clip_synthetic/model.safetensors --tokenizer scratch/clip_tokenizer
    python scripts/package_clip.py runs/clip_synthetic --tokenizer scratch/clip_tokenizer --out scratch/clip_mid
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import tapkit
from tapkit.defaults import ASSETS
from tapkit.models.clip.config import from_open_clip
from tapkit.models.clip.model import ClipModel
from tapkit.models.clip.save import save_open_clip_folder
from tapkit.models.clip.tokenizer import ClipTokenizer
from tapkit.training.checkpoint import load_train_state

LIMIT_BYTES = 8 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path, help="the stage's exported .safetensors, or its run folder (checkpoint.pt)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="the folder with vocab.json + merges.txt it trained with")
    parser.add_argument("--out", type=Path, default=ASSETS / "clip")
    args = parser.parse_args()
    if args.weights.is_dir():
        state = load_train_state(args.weights)
        model = ClipModel(from_open_clip(state.tap_config))
        model.load_state_dict(state.model)
        print(f"training checkpoint at step {state.step}")
    else:
        model = tapkit.load_clip(args.weights, tokenizer=args.tokenizer).model
    tokenizer = ClipTokenizer.from_dir(args.tokenizer, model.context_length)
    folder = save_open_clip_folder(model, tokenizer, args.out, dtype=torch.float16)
    size = sum(f.stat().st_size for f in folder.iterdir())
    if size > LIMIT_BYTES:
        raise SystemExit(f"{folder} is {size / 2**20:.1f} MB, over the {LIMIT_BYTES / 2**20:.0f} MB package limit")
    print(f"wrote {folder} ({size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
