"""`steerfront datasets list|show|validate`: the concept sets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from steerfront.cli.args import add_dtype, add_format, add_output


def add(commands: argparse._SubParsersAction) -> None:
    datasets = commands.add_parser("datasets", help="list, show and validate concept sets")
    datasets_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    listing = datasets_commands.add_parser("list", help="built-in concept sets and their sizes")
    add_output(listing, "the list", progress=False)
    listing.set_defaults(run=list_sets, parser=listing)
    show = datasets_commands.add_parser("show", help="print a few pairs of a concept set")
    show.add_argument("name", help="built-in concept name or path to a concept file")
    show.add_argument("-n", type=int, default=3, help="how many pairs to print (default: 3)")
    add_format(show)
    add_output(show, '{"name", "pairs": the set\'s size, "shown": the first N pairs}', False)
    show.set_defaults(run=show_set, parser=show)
    validate = datasets_commands.add_parser(
        "validate",
        help="check a concept set (a built-in name or a file); warn (on stderr) of "
        "completions of unequal length and of too few pairs for a test split",
    )
    validate.add_argument("file", help="built-in concept name or path to a concept file")
    add_format(validate)
    validate.add_argument(
        "--model",
        default=None,
        help="also report token lengths under this model's tokenizer (default: none)",
    )
    add_dtype(validate)
    add_output(validate, "the findings (warnings included)", progress=False)
    validate.set_defaults(run=validate_set, parser=validate)


def list_sets(args: argparse.Namespace) -> None:
    from steerfront.data import builtin_names, load_concept

    rows = []
    for name in builtin_names():
        pairs = load_concept(name)
        shape = "short answer" if pairs.is_short_answer else "free text"
        rows.append({"name": name, "pairs": len(pairs), "shape": shape})
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'name':<16} {'pairs':>5}  shape")
    for row in rows:
        print(f"{row['name']:<16} {row['pairs']:>5}  {row['shape']}")


def show_set(args: argparse.Namespace) -> None:
    from steerfront.data import load_concept

    pairs = load_concept(args.name, args.format)
    shown = pairs.pairs[: max(args.n, 0)]
    if args.json:
        rows = [
            {"prompt": p.prompt, "positive": p.positive, "negative": p.negative, "meta": p.meta}
            for p in shown
        ]
        print(json.dumps({"name": pairs.name, "pairs": len(pairs), "shown": rows}, default=str))
        return
    for pair in shown:
        print(f"prompt:   {pair.prompt}\npositive: {pair.positive!r}")
        print(f"negative: {pair.negative!r}\n")
    print(f"{pairs.name}: {len(pairs)} pairs")


def validate_set(args: argparse.Namespace) -> None:
    from steerfront.data import builtin_names, encode_pairs, load_concept
    from steerfront.data.checks import warnings
    from steerfront.data.loaders import detect_format

    pairs = load_concept(args.file, args.format)
    builtin = args.file in builtin_names()
    fmt = "steerfront" if builtin else args.format or detect_format(Path(args.file))
    shape = "short answer" if pairs.is_short_answer else "free text"
    found = warnings(pairs)
    tokens = {}
    if args.model:
        from steerfront.lm import load_model

        lm = load_model(args.model, dtype=args.dtype)
        encoded = encode_pairs(lm.tokenizer, pairs)
        for part in ("prompt", "positive", "negative"):
            lengths = sorted(len(getattr(e, part)) for e in encoded)
            tokens[part] = {
                "min": lengths[0],
                "median": lengths[len(lengths) // 2],
                "max": lengths[-1],
            }
    if args.json:
        document = {"concept": args.file, "builtin": builtin, "pairs": len(pairs)}
        document.update(format=fmt, shape=shape, warnings=found, tokens=tokens or None)
        print(json.dumps(document))
        return
    what = f"{args.file} (built-in)" if builtin else args.file
    print(f"{what}: ok, {len(pairs)} pairs, format {fmt}, {shape}")
    for warning in found:
        print(f"warning: {args.file}: {warning}", file=sys.stderr)
    for part, length in tokens.items():
        print(
            f"  {part:<8} tokens: min {length['min']}, median {length['median']}, "
            f"max {length['max']}"
        )
