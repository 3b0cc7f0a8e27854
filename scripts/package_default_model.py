"""Packages a trained model as tapkit's default model: float16 weights (the package
limit is 15 MB; the model computes in float32 after loading), with the architecture
in the safetensors metadata, plus its tokenizer and concept file. --everything ships the
automatic-mode settings the model was measured with (EverythingConfig fields; a user's
flags still win, docs/everything.md).

    python scripts/package_default_model.py runs/default_caption/model.safetensors \
        --tokenizer scratch/tokenizer.model --concepts scratch/concepts.pkl \
        --everything pred_iou_thresh=0.8 stability_thresh=0.9
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import torch

from tapkit.checkpoint.io import load_checkpoint, save_safetensors
from tapkit.defaults import ASSETS
from tapkit.everything.generator import EverythingConfig

LIMIT_BYTES = 15 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--concepts", type=Path, required=True)
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--everything", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="automatic-mode settings shipped with the model (default: those of the checkpoint, if any)")
    args = parser.parse_args()
    # a field's type from its annotation ("float | None" -> float: optional settings too)
    words = {"int": int, "float": float, "str": str, "bool": bool}
    types = {f.name: words.get(str(f.type).split()[0]) for f in dataclasses.fields(EverythingConfig)}
    everything = dict(load_checkpoint(args.checkpoint).everything)
    for item in args.everything:
        name, _, value = item.partition("=")
        if types.get(name) not in (int, float, str):
            parser.error(f"--everything: {name!r} is not a number or word setting; choose from "
                         f"{', '.join(n for n, t in types.items() if t in (int, float, str))}")
        everything[name] = value if types[name] is str else types[name](value)
    EverythingConfig(**everything)  # valid together
    ckpt = load_checkpoint(args.checkpoint)
    tensors = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in ckpt.tensors.items()}
    args.assets.mkdir(parents=True, exist_ok=True)
    target = args.assets / "default_model.safetensors"
    save_safetensors(tensors, target, config=ckpt.config, everything=everything)
    for source, name in ((args.tokenizer, "default_tokenizer.model"), (args.concepts, "default_concepts.pkl")):
        if source.resolve() != (args.assets / name).resolve():  # repackaging keeps the packaged companions
            shutil.copyfile(source, args.assets / name)
    for name in ("default_model.safetensors", "default_tokenizer.model", "default_concepts.pkl"):
        (args.assets / name).chmod(0o644)  # atomic writes create 0600 files; package data must be readable
    size = target.stat().st_size
    assert size <= LIMIT_BYTES, f"{target} is {size} bytes, over the 15 MB limit"
    print(f"packaged {target} ({size / 1e6:.1f} MB), tokenizer and concepts in {args.assets}; automatic mode: {everything}")


if __name__ == "__main__":
    main()
