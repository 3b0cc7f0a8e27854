"""`tapkit convert`: rewrite weights as .safetensors (or in the family's official format)."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import torch

from tapkit.checkpoint.io import save_safetensors
from tapkit.errors import UserError
from tapkit.loading import DTYPES
from tapkit.models.families import Companions, build_from_checkpoint, read_checkpoint
from tapkit.utils.atomic import write_bytes_atomic, write_with

# Official formats: TAP ships pickles of numpy arrays, SAM torch files of its state dict.
OFFICIAL_SUFFIX = {"tap": ".pkl", "sam": ".pth"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert weights between .pkl, torch and .safetensors",
        description=(
            "Read a checkpoint of any family (TAP .pkl/.safetensors/torch file, SAM .pth, SCA .safetensors or a "
            "released segment-caption-anything directory), check it builds a model, and write it as .safetensors "
            "(architecture stored in the metadata) or in the family's official format (TAP .pkl, SAM .pth)."
        ),
    )
    p.add_argument("input", help="checkpoint to read")
    p.add_argument("output", help="file to write: *.safetensors, or *.pkl (TAP) / *.pth (SAM)")
    p.add_argument("--preset", help="assert the architecture (e.g. tap_vit_b, sam_vit_h)")
    p.add_argument("--dtype", choices=("keep", *DTYPES), default="keep",
                   help="dtype of the written weights (default: keep, the dtype the input stores them in)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix not in (".safetensors", ".pkl", ".pth"):
        raise UserError(f"output must end in .safetensors, .pkl or .pth, got '{out.name}'")
    checkpoint = read_checkpoint(args.input)
    dtype = checkpoint.float_dtype() if args.dtype == "keep" else DTYPES[args.dtype]
    if out.suffix == ".pkl" and dtype == torch.bfloat16:
        raise UserError("a .pkl holds numpy arrays, which have no bfloat16: write .safetensors or pass --dtype float32")
    model = build_from_checkpoint(checkpoint, Companions(preset=args.preset))
    if out.suffix != ".safetensors" and OFFICIAL_SUFFIX.get(model.family) != out.suffix:
        raise UserError(f"a {model.family.upper()} model is written as .safetensors or {OFFICIAL_SUFFIX.get(model.family, '(no official format)')}")
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.learned_state_dict().items()}
    if out.suffix == ".safetensors":
        save_safetensors(tensors, out, config=model.cfg.to_dict(), everything=checkpoint.everything)
    elif out.suffix == ".pkl":
        arrays = {k: v.detach().cpu().numpy() for k, v in tensors.items()}
        write_bytes_atomic(out, pickle.dumps(arrays, protocol=4))
    else:
        state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        write_with(out, lambda tmp: torch.save(state, tmp))
    n = sum(v.numel() for v in tensors.values())
    print(f"wrote {out} ({len(tensors)} tensors, {n / 1e6:.1f}M parameters, {str(dtype).removeprefix('torch.')})")
    return 0
