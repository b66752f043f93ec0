"""One entry point, `steerfront <command>`: one module per command, each with `add` (its
arguments) and `run` (what it does)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from steerfront.cli import (
    best,
    cache,
    datasets,
    evaluate,
    export,
    front,
    generate,
    judge,
    layers,
    search,
    sweep,
    ui,
)
from steerfront.cli.args import Parser
from steerfront.errors import SteerfrontError

COMMANDS = (
    datasets,
    evaluate,
    layers,
    sweep,
    search,
    judge,
    front,
    best,
    export,
    ui,
    generate,
    cache,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="steerfront", description=__doc__.split(":")[0] + ".")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            args.parser.reject(extra)
    except SystemExit as exc:  # --help, or a bad flag (already reported in one line)
        return int(exc.code or 0)
    try:
        return args.run(args) or 0
    except SteerfrontError as exc:
        print(f"steerfront: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("steerfront: interrupted", file=sys.stderr)
        return 130
