"""One entry point: `steerfront <command>`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from steerfront.defaults import DEFAULT_CONCEPT, DEFAULT_MODEL
from steerfront.errors import SteerfrontError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2, no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"built-in name, local folder or Hugging Face hub id (default: {DEFAULT_MODEL})",
    )


def _add_concept(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concept",
        default=DEFAULT_CONCEPT,
        help=f"built-in concept name or path to a concept file (default: {DEFAULT_CONCEPT})",
    )
    _add_format(parser)


def _add_format(parser: argparse.ArgumentParser) -> None:
    from steerfront.data import FORMATS

    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="concept file format (default: detected from the file's extension and fields)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="steerfront", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    datasets = commands.add_parser("datasets", help="list, show and validate concept sets")
    datasets_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    datasets_commands.add_parser("list", help="built-in concept sets and their sizes")
    show = datasets_commands.add_parser("show", help="print a few pairs of a concept set")
    show.add_argument("name", help="built-in concept name or path to a concept file")
    show.add_argument("-n", type=int, default=3, help="how many pairs to print (default: 3)")
    _add_format(show)
    validate = datasets_commands.add_parser("validate", help="check a concept file")
    validate.add_argument("file", help="path to a concept file")
    _add_format(validate)
    validate.add_argument(
        "--model", default=None, help="also report token lengths under this model's tokenizer"
    )

    evaluate = commands.add_parser(
        "evaluate", help="score the unsteered model's preference and utility log-odds"
    )
    _add_model(evaluate)
    _add_concept(evaluate)
    evaluate.add_argument(
        "--pairs", type=int, default=6, help="how many pairs to score (default: 6)"
    )
    evaluate.add_argument("--json", action="store_true", help="print results as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "datasets":
            _datasets(args)
        elif args.command == "evaluate":
            _evaluate(args)
    except SteerfrontError as exc:
        print(f"steerfront: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("steerfront: interrupted", file=sys.stderr)
        return 130
    return 0


def _datasets(args: argparse.Namespace) -> None:
    from steerfront.data import builtin_names, load_concept

    if args.datasets_command == "list":
        print(f"{'name':<16} {'pairs':>5}  shape")
        for name in builtin_names():
            pairs = load_concept(name)
            shape = "short answer" if pairs.is_short_answer else "free text"
            print(f"{name:<16} {len(pairs):>5}  {shape}")
    elif args.datasets_command == "show":
        pairs = load_concept(args.name, args.format)
        for pair in pairs.pairs[: max(args.n, 0)]:
            print(f"prompt:   {pair.prompt}\npositive: {pair.positive!r}")
            print(f"negative: {pair.negative!r}\n")
        print(f"{pairs.name}: {len(pairs)} pairs")
    else:
        _validate(args)


def _validate(args: argparse.Namespace) -> None:
    from steerfront.data import encode_pairs, load_pairs
    from steerfront.data.loaders import detect_format

    pairs = load_pairs(args.file, args.format)
    fmt = args.format or detect_format(Path(args.file))
    shape = "short answer" if pairs.is_short_answer else "free text"
    print(f"{args.file}: ok, {len(pairs)} pairs, format {fmt}, {shape}")
    if args.model:
        from steerfront.lm import load_model

        lm = load_model(args.model)
        encoded = encode_pairs(lm.tokenizer, pairs)
        for part in ("prompt", "positive", "negative"):
            lengths = sorted(len(getattr(e, part)) for e in encoded)
            print(
                f"  {part:<8} tokens: min {lengths[0]}, median {lengths[len(lengths) // 2]}, "
                f"max {lengths[-1]}"
            )


def _evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from steerfront.data import encode_pairs, load_concept
    from steerfront.lm import load_model
    from steerfront.scoring.logodds import LogOdds
    from steerfront.scoring.reference import reference_nll

    if args.pairs < 1:
        raise SteerfrontError(f"--pairs must be at least 1, not {args.pairs}")
    pairs = load_concept(args.concept, args.format)
    lm = load_model(args.model)
    encoded = encode_pairs(lm.tokenizer, pairs)[: args.pairs]
    l_p = np.array([reference_nll(lm, e, positive=True) for e in encoded])
    l_n = np.array([reference_nll(lm, e, positive=False) for e in encoded])
    scores = LogOdds(np.arange(len(encoded)), np.zeros(len(encoded)), l_p, l_n)
    summary = scores.summary().to_pylist()[0]
    if args.json:
        rows = scores.table().drop_columns(["m"]).to_pylist()
        print(json.dumps({"model": lm.spec, "concept": pairs.name, "pairs": rows, **summary}))
        return
    print(f"{'pair':>4} {'L_p':>8} {'L_n':>8} {'pref_odds':>10} {'util_odds':>10}  prompt")
    for i, (lp, ln, pref, util) in enumerate(zip(l_p, l_n, scores.pref, scores.util, strict=True)):
        prompt = " ".join(pairs[i].prompt.split())[:60]
        print(f"{i:>4} {lp:>8.3f} {ln:>8.3f} {pref:>10.3f} {util:>10.3f}  {prompt}")
    print(
        f"mean pref_odds {summary['pref_odds']:.3f} ± {summary['pref_se']:.3f}, "
        f"util_odds {summary['util_odds']:.3f} ± {summary['util_se']:.3f}, "
        f"accuracy {summary['accuracy']:.2f} (model {lm.spec}, concept {pairs.name}, unsteered)"
    )


if __name__ == "__main__":
    sys.exit(main())
