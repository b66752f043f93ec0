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
    report,
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
    report,
    export,
    ui,
    generate,
    cache,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="steerfront", description=__doc__.split(":")[0] + ".")
    parser.add_argument(
        "--version",
        action=Version,
        nargs=0,
        help="print steerfront's version and the default model's, and exit",
    )
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


class Version(argparse.Action):
    """`--version`: one line, unwrapped."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version())
        parser.exit(0)


def version() -> str:
    """steerfront's version, and the default model's: its name, the model it was made from and
    the package (and version) that ships it."""
    import importlib.metadata

    from steerfront.defaults import DEFAULT_MODEL, DEFAULT_MODEL_HUB_ID, DEFAULT_MODEL_PACKAGE

    def installed(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return (
        f"steerfront {installed('steerfront')}; default model {DEFAULT_MODEL} "
        f"({DEFAULT_MODEL_HUB_ID}, Q4_1 GGUF from {DEFAULT_MODEL_PACKAGE} "
        f"{installed(DEFAULT_MODEL_PACKAGE)})"
    )
