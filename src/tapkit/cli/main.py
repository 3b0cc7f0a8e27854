"""`tapkit` entry point. Each command module has `add_parser(subparsers)` which
registers its parser and sets `func` to a `run(args) -> int`."""

from __future__ import annotations

import argparse
import re
import os
import sys

from tapkit import __version__
from tapkit.cli import concepts, convert, data, everything, predict, segment, serve, train
from tapkit.cli import eval as eval_command
from tapkit.errors import UserError

COMMANDS = (predict, everything, segment, convert, eval_command, serve, train, data, concepts)
# Options whose value is a list of numbers: `--box -10,-10,50,50` must not read as an option.
NUMBER_LIST_OPTIONS = ("--point", "--box", "--points")
_NUMBER_LIST = re.compile(r"^-[0-9.]")


def join_negative_values(argv: list[str]) -> list[str]:
    """['--box', '-10,-10,50,50'] -> ['--box=-10,-10,50,50'], so that argparse takes a value
    that starts with a minus sign as the option's value instead of an unknown option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token in NUMBER_LIST_OPTIONS and i + 1 < len(argv) and _NUMBER_LIST.match(argv[i + 1]):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


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
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except UserError as err:
        print(f"tapkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tapkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
