"""One entry point: `steerfront <command>`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from steerfront.defaults import (
    DEFAULT_CONCEPT,
    DEFAULT_MODEL,
    FACTORS,
    FORMS,
    LEARNING_RATE,
    OBJECTIVES,
    SPLIT,
    TEST_FRACTION,
    TRAIN,
)
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
    _add_sweep(commands)
    return parser


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, not {text!r}"
        ) from None


def _per_form(values: dict) -> str:
    return ", ".join(f"{form} {value}" for form, value in values.items())


def _add_sweep(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="train one intervention and score it over an m-grid (curves, fits, manifold)",
    )
    _add_model(sweep)
    _add_concept(sweep)
    sweep.add_argument(
        "--form", choices=FORMS, default="vector", help="intervention form (default: vector)"
    )
    sweep.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="split",
        help="how to obtain it (default: split)",
    )
    sweep.add_argument(
        "--layer", type=int, default=None, help="decoder layer (default: half the model's layers)"
    )
    sweep.add_argument(
        "--m",
        type=_floats,
        default=None,
        help="comma-separated m values (default: a symmetric grid, denser near 0, that reaches "
        "saturation)",
    )
    sweep.add_argument(
        "--rank", type=int, default=TRAIN["rank"], help=f"LoRA rank (default: {TRAIN['rank']})"
    )
    for name, value in SPLIT.items():
        sweep.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            default=value,
            help=f"SPLIT's {name} (default: {value})",
        )
    sweep.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"learning rate (default: {_per_form(LEARNING_RATE)})",
    )
    sweep.add_argument(
        "--epochs",
        type=int,
        default=TRAIN["epochs"],
        help=f"training epochs (default: {TRAIN['epochs']})",
    )
    sweep.add_argument(
        "--batch-size",
        type=int,
        default=TRAIN["batch_size"],
        help=f"pairs per training step (default: {TRAIN['batch_size']})",
    )
    sweep.add_argument(
        "--factors",
        type=_floats,
        default=None,
        help="training factors a, comma-separated (default: "
        + _per_form({f: f"{v[0]:g}..{v[-1]:g}" for f, v in FACTORS.items()})
        + ")",
    )
    sweep.add_argument(
        "--seed",
        type=int,
        default=TRAIN["seed"],
        help=f"seed for the split and training (default: {TRAIN['seed']})",
    )
    sweep.add_argument(
        "--test-fraction",
        type=float,
        default=TEST_FRACTION,
        help=f"share of pairs held out for testing (default: {TEST_FRACTION})",
    )
    sweep.add_argument(
        "--out",
        default=None,
        help="output folder (default: runs/sweep-CONCEPT-FORM-OBJECTIVE-lLAYER)",
    )
    sweep.add_argument("--json", action="store_true", help="print results as JSON")
    sweep.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag (already reported in one line)
        return int(exc.code or 0)
    try:
        if args.command == "datasets":
            _datasets(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "sweep":
            _sweep(args)
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
    from steerfront.data import encode_pairs, load_concept
    from steerfront.lm import load_model
    from steerfront.scoring.evaluate import evaluate

    if args.pairs < 1:
        raise SteerfrontError(f"--pairs must be at least 1, not {args.pairs}")
    pairs = load_concept(args.concept, args.format)
    lm = load_model(args.model)
    scores = evaluate(lm, encode_pairs(lm.tokenizer, pairs)[: args.pairs], None, 0.0)
    summary = scores.summary().to_pylist()[0]
    if args.json:
        rows = scores.table().drop_columns(["m"]).to_pylist()
        print(json.dumps({"model": lm.spec, "concept": pairs.name, "pairs": rows, **summary}))
        return
    print(f"{'pair':>4} {'L_p':>8} {'L_n':>8} {'pref_odds':>10} {'util_odds':>10}  prompt")
    for i in range(len(scores.m)):
        prompt = " ".join(pairs[i].prompt.split())[:60]
        print(
            f"{i:>4} {scores.l_p[i]:>8.3f} {scores.l_n[i]:>8.3f} {scores.pref[i]:>10.3f} "
            f"{scores.util[i]:>10.3f}  {prompt}"
        )
    print(
        f"mean pref_odds {summary['pref_odds']:.3f} ± {summary['pref_se']:.3f}, "
        f"util_odds {summary['util_odds']:.3f} ± {summary['util_se']:.3f}, "
        f"accuracy {summary['accuracy']:.2f} (model {lm.spec}, concept {pairs.name}, unsteered)"
    )


def _sweep(args: argparse.Namespace) -> None:
    from steerfront.data import load_concept
    from steerfront.lm import load_model
    from steerfront.methods import Objective, TrainSpec
    from steerfront.methods.interventions import shapes
    from steerfront.scoring.evaluate import check_grid
    from steerfront.scoring.report import write_sweep
    from steerfront.scoring.sweep import default_grid, run_sweep

    pairs = load_concept(args.concept, args.format)
    if not 0 < args.test_fraction < 1:
        raise SteerfrontError(f"--test-fraction must be between 0 and 1, not {args.test_fraction}")
    splits = pairs.split(val_fraction=0.0, test_fraction=args.test_fraction, seed=args.seed)
    if len(splits.test) == 0 or len(splits.train) == 0:
        raise SteerfrontError(
            f"concept {pairs.name!r}: {len(pairs)} pairs leave no train or test pairs "
            f"at --test-fraction {args.test_fraction}"
        )
    objective = Objective(
        args.objective,
        lambda_p=args.lambda_p,
        lambda_n=args.lambda_n,
        gamma=args.gamma,
        theta=args.theta,
    )
    lm = load_model(args.model)
    spec = TrainSpec(
        form=args.form,
        layer=lm.check_layer(args.layer if args.layer is not None else lm.n_layers // 2),
        objective=objective,
        rank=args.rank,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        factors=args.factors,
        seed=args.seed,
    )
    grid = check_grid(args.m if args.m is not None else default_grid(spec)).tolist()
    shapes(spec.form, lm, spec.layer, spec.rank)
    out = Path(args.out or f"runs/sweep-{pairs.name}-{spec.form}-{objective.name}-l{spec.layer}")
    if not args.quiet:
        print(
            f"sweep: {lm.spec}, concept {pairs.name} ({len(splits.train)} train / "
            f"{len(splits.test)} test pairs), {spec.form} {objective.name} at layer "
            f"{spec.layer}, {len(grid)} values of m",
            file=sys.stderr,
        )
    result = run_sweep(lm, splits, spec, grid, progress=not args.quiet)
    write_sweep(
        result,
        out,
        lm,
        title=f"{lm.spec} · {pairs.name} · {spec.form} {objective.name} · layer {spec.layer}",
    )
    if args.json:
        print(
            json.dumps(
                {
                    "out": str(out),
                    "summary": result["summary"].to_pylist(),
                    "fits": {kind: report.numbers() for kind, report in result["fits"].items()},
                    "manifold": result["manifold"],
                }
            )
        )
        return
    _print_sweep(result, out)


def _print_sweep(result: dict, out: Path) -> None:
    columns = (
        "m",
        "train_pref_odds",
        "test_pref_odds",
        "train_util_odds",
        "test_util_odds",
        "test_accuracy",
        "off_manifold",
        "knn_distance",
    )
    heads = (
        "m",
        "pref train",
        "pref test",
        "util train",
        "util test",
        "acc test",
        "off-manif",
        "kNN dist",
    )
    print("  ".join(f"{h:>10}" for h in heads))
    for row in result["summary"].to_pylist():
        print("  ".join(f"{row[c]:>10.3f}" for c in columns))
    for kind, report in result["fits"].items():
        print(
            f"{kind} fit: R² train {report.train.r2:.3f}, test {report.test.r2:.3f}, "
            f"transfer {report.r2_transfer:.3f}"
        )
    manifold = result["manifold"]
    print(
        f"manifold: k = {manifold['k']} components explain {manifold['explained']:.0%} of "
        f"unsteered variance; corr(off-manifold, utility loss) = "
        f"{manifold['corr_off_manifold_util_loss']:.3f}"
    )
    files = ", ".join(sorted(path.name for path in out.iterdir()))
    print(f"wrote {out}/: {files}")


if __name__ == "__main__":
    sys.exit(main())
