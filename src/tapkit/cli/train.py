"""`tapkit train CONFIG.yaml`: one training stage (segment, caption, sca or clip) from a YAML config."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  tapkit train configs/default_segment.yaml
  tapkit train configs/default_caption.yaml --set steps=200 --set optim.lr=3e-4
  tapkit train configs/clip_synthetic.yaml                     (a CLIP, contrastive)
  torchrun --nproc_per_node 8 -m tapkit.cli.main train configs/sa1b_vit_b.yaml --set distributed=fsdp

Re-running the same command resumes from OUT_DIR/checkpoint.pt (it says at which step);
a changed config is refused unless --allow-config-change, a changed architecture always.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train TAP (promptable segmentation + concepts, or captions), SCA or a CLIP",
                              description="Train one stage of TAP from a YAML config; resumes from the output directory.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="end this run after N steps (a checkpoint is written there; running again resumes)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the config differs from the checkpoint's (learning rate, batch size, steps, "
                        "...); the changes are printed. Another architecture is always refused")
    p.set_defaults(func=run)


def run(args) -> int:
    from tapkit.errors import UserError
    from tapkit.training.config import load_config
    from tapkit.training.engine import train

    if args.stop_after is not None and args.stop_after < 1:
        raise UserError(f"--stop-after must be at least 1, got {args.stop_after}")
    result = train(load_config(args.config, args.set), progress=not args.no_progress, stop_after=args.stop_after,
                   allow_config_change=args.allow_config_change)
    if result.export is not None:
        print(f"trained {result.steps} steps, loss {result.first_loss} -> {result.final_loss}; weights: {result.export}")
    elif args.stop_after is not None:
        print(f"stopped after {args.stop_after} steps; the checkpoint is in the run's out_dir")
    return 0
