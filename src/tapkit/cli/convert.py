"""`tapkit convert`: rewrite weights as .safetensors (or an official-style .pkl)."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

from tapkit.checkpoint.io import load_checkpoint, save_safetensors
from tapkit.errors import UserError
from tapkit.models.tap.build import tap_from_checkpoint
from tapkit.utils.atomic import write_bytes_atomic


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert weights between .pkl, torch and .safetensors",
        description=(
            "Read a TAP checkpoint (official .pkl, .safetensors or torch file), check it builds a model, "
            "and write it as .safetensors (architecture stored in the metadata) or as an official-style .pkl."
        ),
    )
    p.add_argument("input", help="checkpoint to read")
    p.add_argument("output", help="file to write: *.safetensors or *.pkl")
    p.add_argument("--preset", help="assert the architecture (tap_vit_b, tap_vit_l, tap_vit_h)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix not in (".safetensors", ".pkl"):
        raise UserError(f"output must end in .safetensors or .pkl, got '{out.name}'")
    model = tap_from_checkpoint(load_checkpoint(args.input), preset=args.preset)
    tensors = model.learned_state_dict()
    if out.suffix == ".safetensors":
        save_safetensors(tensors, out, config=model.cfg.to_dict())
    else:
        arrays = {k: v.detach().cpu().numpy() for k, v in tensors.items()}
        write_bytes_atomic(out, pickle.dumps(arrays, protocol=4))
    n = sum(v.numel() for v in tensors.values())
    print(f"wrote {out} ({len(tensors)} tensors, {n / 1e6:.1f}M parameters)")
    return 0
