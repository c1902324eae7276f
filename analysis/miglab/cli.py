"""The `miglab` command: a thin argparse layer over the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from miglab import __version__
from miglab.errors import MiglabError
from miglab.lab import commands as lab_commands
from miglab.results import commands as results_commands
from miglab.vlab import commands as vlab_commands

# Each command group registers its sub-commands; a sub-command stores its handler in
# `func`, which takes the parsed namespace and returns an exit code.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    lab_commands.register,
    vlab_commands.register,
    results_commands.register,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="miglab",
        description="Page-migration lab: the lab's main job, virtual lab control and result analysis.",
    )
    parser.add_argument("--version", action="version", version=f"miglab {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except MiglabError as error:
        print(f"miglab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
