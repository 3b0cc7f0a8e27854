"""`tapkit` entry point. Each command module has `add_parser(subparsers)` which
registers its parser and sets `func` to a `run(args) -> int`."""

from __future__ import annotations

import argparse
import sys

from tapkit import __version__
from tapkit.cli import concepts, convert, data, everything, predict, serve, train
from tapkit.cli import eval as eval_command
from tapkit.errors import UserError

COMMANDS = (predict, everything, convert, eval_command, serve, train, data, concepts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tapkit",
        description="Segment, recognize and caption any image region from a click, a box or a sketch.",
    )
    parser.add_argument("--version", action="version", version=f"tapkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"tapkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tapkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
