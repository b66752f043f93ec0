"""One entry point: `steerfront <command>`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from steerfront.defaults import (
    DEFAULT_CONCEPT,
    DEFAULT_MODEL,
    DTYPES,
    FACTORS,
    FORMS,
    LEARNING_RATE,
    OBJECTIVES,
    SEARCH,
    SEARCH_SPACE,
    SPLIT,
    TEST_FRACTION,
    TRAIN,
)
from steerfront.errors import SteerfrontError
from steerfront.search.storage import Store

if TYPE_CHECKING:
    from steerfront.search.run import SearchSettings
    from steerfront.search.space import SearchSpace


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


def _add_dtype(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the model's dtype; auto: bfloat16 on a GPU, float32 on a CPU (default: auto)",
    )


def _add_concept(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concept",
        default=DEFAULT_CONCEPT,
        help=f"built-in concept name or path to a concept file (default: {DEFAULT_CONCEPT})",
    )
    _add_format(parser)


def _add_end_of_turn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--end-of-turn",
        action="store_true",
        help="score each completion with the chat template's end of turn after it, so an "
        "answer that would go on scores lower (default: the completion alone)",
    )


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
    listing = datasets_commands.add_parser("list", help="built-in concept sets and their sizes")
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
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
    _add_dtype(validate)

    evaluate = commands.add_parser(
        "evaluate", help="score the unsteered model's preference and utility log-odds"
    )
    _add_model(evaluate)
    _add_dtype(evaluate)
    _add_concept(evaluate)
    _add_end_of_turn(evaluate)
    evaluate.add_argument(
        "--pairs", type=int, default=6, help="how many pairs to score (default: 6)"
    )
    evaluate.add_argument("--json", action="store_true", help="print results as JSON")
    _add_sweep(commands)
    _add_search(commands)
    return parser


def _add_search(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search",
        help="search forms, layers, strengths and hyperparameters for the Pareto front",
        description="Ray Tune runs the trials, Optuna (two objectives: pref_odds and util_odds "
        "on validation pairs) picks them, MLflow tracks them. With no arguments: the embedded "
        "default (local Ray, the default model, a built-in concept, all three forms).",
    )
    _add_model(search)
    _add_dtype(search)
    _add_concept(search)
    _add_end_of_turn(search)
    search.add_argument(
        "--space",
        default=None,
        help="search-space YAML file (default: the built-in space; see README)",
    )
    search.add_argument(
        "--trials",
        type=int,
        default=SEARCH["trials"],
        help=f"trial budget (default: {SEARCH['trials']})",
    )
    search.add_argument(
        "--sampler",
        choices=("tpe", "nsga2", "random"),
        default=SEARCH["sampler"],
        help="Optuna sampler; nsga2 breeds generations of a quarter of the trials (4 to 50) "
        f"(default: {SEARCH['sampler']})",
    )
    search.add_argument(
        "--seed",
        type=int,
        default=SEARCH["seed"],
        help=f"seed of the sampler, the split and training (default: {SEARCH['seed']})",
    )
    search.add_argument(
        "--layers",
        type=_ints,
        default=None,
        help="comma-separated layers (default: every third layer of the middle half)",
    )
    search.add_argument(
        "--forms",
        type=_words,
        default=None,
        help=f"comma-separated forms (default: {','.join(SEARCH_SPACE['forms'])})",
    )
    search.add_argument(
        "--objectives",
        type=_words,
        default=None,
        help=f"comma-separated objectives (default: {','.join(SEARCH_SPACE['objectives'])})",
    )
    search.add_argument(
        "--steps",
        type=_ints,
        default=None,
        help="comma-separated training budgets in optimizer steps "
        f"(default: {','.join(map(str, SEARCH_SPACE['steps']))})",
    )
    search.add_argument("--name", default=None, help="search name (default: search-DATE-TIME)")
    search.add_argument(
        "--resume",
        metavar="NAME",
        default=None,
        help="continue the search NAME whose driver stopped (default: start a new search)",
    )
    search.add_argument(
        "--storage",
        default=SEARCH["storage"],
        help="folder for the search's results, Ray state and cache of trained interventions, "
        f"and the default MLflow store; a shared path (NFS) on a cluster "
        f"(default: {SEARCH['storage']})",
    )
    search.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///STORAGE/mlflow.db)",
    )
    search.add_argument(
        "--address",
        default=None,
        help="join this Ray cluster (default: RAY_ADDRESS, else start a local one)",
    )
    search.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="trials at once (default: as many as the resources allow)",
    )
    search.add_argument(
        "--retries",
        type=int,
        default=1,
        help="times a trial whose worker died is run again before it counts as failed (default: 1)",
    )
    search.add_argument(
        "--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default: 1)"
    )
    search.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="GPUs per trial, fractions allowed (default: 0)",
    )
    search.add_argument(
        "--dense-m",
        type=int,
        default=SEARCH["dense_m"],
        metavar="K",
        help="each trial also scores K values of m around its own, in the same pass, for the "
        f"extended front; 0 turns this off (default: {SEARCH['dense_m']})",
    )
    search.add_argument(
        "--max-util-drop",
        type=float,
        default=SEARCH["max_util_drop"],
        help=f"best: most utility log-odds to give up (default: {SEARCH['max_util_drop']})",
    )
    search.add_argument("--json", action="store_true", help="print the summary as JSON (last line)")
    search.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    front = commands.add_parser("front", help="print a search's Pareto front")
    _add_finished_search(front)
    front.add_argument("--json", action="store_true", help="print the front as JSON")

    best = commands.add_parser(
        "best", help="pick one configuration from a search's front and export it"
    )
    _add_finished_search(best)
    best.add_argument(
        "--rule",
        choices=("max-pref", "knee"),
        default="max-pref",
        help="max-pref: highest pref_odds within --max-util-drop; knee: the front's knee "
        "(default: max-pref)",
    )
    best.add_argument(
        "--max-util-drop",
        type=float,
        default=SEARCH["max_util_drop"],
        help=f"most utility log-odds to give up (default: {SEARCH['max_util_drop']})",
    )
    best.add_argument("--out", default=None, help="export folder (default: SEARCH/best)")
    _add_dtype(best)
    best.add_argument("--json", action="store_true", help="print the pick as JSON")

    ui = commands.add_parser("ui", help="browse searches in the MLflow UI (binds 127.0.0.1)")
    ui.add_argument(
        "--storage",
        default=SEARCH["storage"],
        help=f"folder of searches (default: {SEARCH['storage']})",
    )
    ui.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///STORAGE/mlflow.db)",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: 5000)")

    generate = commands.add_parser(
        "generate", help="the steered model's answer beside the unsteered one"
    )
    generate.add_argument("prompt", help="the user's message")
    generate.add_argument(
        "--intervention",
        required=True,
        help="an exported intervention (.safetensors with its .json sidecar)",
    )
    generate.add_argument(
        "--m",
        type=float,
        default=None,
        help="steering strength (default: the one saved with the intervention, else 1)",
    )
    generate.add_argument(
        "--model", default=None, help="model (default: the one the intervention was made for)"
    )
    generate.add_argument(
        "--max-new-tokens", type=int, default=60, help="answer length limit (default: 60)"
    )
    _add_dtype(generate)


def _add_finished_search(parser: argparse.ArgumentParser) -> None:
    """The arguments `front` and `best` share: which search, and which of its fronts."""
    parser.add_argument("search", help="search name (or its folder)")
    parser.add_argument(
        "--storage",
        default=SEARCH["storage"],
        help=f"folder or object-store URI of searches (default: {SEARCH['storage']})",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="the plain front (trials' own results) instead of the extended front "
        "(default: extended)",
    )


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}"
        ) from None


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


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
    _add_dtype(sweep)
    _add_concept(sweep)
    _add_end_of_turn(sweep)
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
        help="comma-separated m values, in any order (default: a symmetric grid, denser near 0, "
        "that reaches saturation); the fits need m of both signs and twice as many distinct m "
        "as they have free parameters",
    )
    sweep.add_argument(
        "--no-fit",
        action="store_true",
        help="skip the decay-curve fits (then any grid of 2 or more distinct m will do; "
        "no fits.json)",
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
        "--steps",
        type=int,
        default=TRAIN["steps"],
        help=f"training budget in optimizer steps, at most (default: {TRAIN['steps']})",
    )
    sweep.add_argument(
        "--patience",
        type=int,
        default=TRAIN["patience"],
        help="stop once this many checks of the held-out loss (every "
        f"{TRAIN['check_every']} steps) bring no improvement; 0 trains the whole budget on "
        f"every pair (default: {TRAIN['patience']})",
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
        elif args.command == "search":
            _search(args)
        elif args.command == "front":
            _front(args)
        elif args.command == "best":
            _best(args)
        elif args.command == "generate":
            _generate(args)
        elif args.command == "ui":
            _ui(args)
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

        lm = load_model(args.model, dtype=args.dtype)
        encoded = encode_pairs(lm.tokenizer, pairs)
        for part in ("prompt", "positive", "negative"):
            lengths = sorted(len(getattr(e, part)) for e in encoded)
            print(
                f"  {part:<8} tokens: min {lengths[0]}, median {lengths[len(lengths) // 2]}, "
                f"max {lengths[-1]}"
            )


def _evaluate(args: argparse.Namespace) -> None:
    from steerfront.data import encode_pairs, load_concept
    from steerfront.lm import dtype_name, load_model
    from steerfront.scoring.evaluate import evaluate

    if args.pairs < 1:
        raise SteerfrontError(f"--pairs must be at least 1, not {args.pairs}")
    pairs = load_concept(args.concept, args.format)
    lm = load_model(args.model, dtype=args.dtype)
    encoded = encode_pairs(lm.tokenizer, pairs, end_of_turn=args.end_of_turn)
    scores = evaluate(lm, encoded[: args.pairs], None, 0.0)
    summary = scores.summary().to_pylist()[0]
    if args.json:
        rows = scores.table().drop_columns(["m"]).to_pylist()
        what = {"model": lm.spec, "dtype": dtype_name(lm.dtype), "concept": pairs.name}
        print(json.dumps({**what, "pairs": rows, **summary}))
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
    from steerfront.scoring.report import write_sweep
    from steerfront.scoring.sweep import default_grid, fit_problem, run_sweep, sweep_grid

    grid = None
    if args.m is not None:
        try:
            grid = sweep_grid(args.m)
        except SteerfrontError as err:
            raise SteerfrontError(f"--m: {err}") from None
        problem = None if args.no_fit else fit_problem(grid)
        if problem:
            raise SteerfrontError(f"--m: {problem} (give more values of m, or pass --no-fit)")
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
    lm = load_model(args.model, dtype=args.dtype)
    spec = TrainSpec(
        form=args.form,
        layer=lm.check_layer(args.layer if args.layer is not None else lm.n_layers // 2),
        objective=objective,
        rank=args.rank,
        lr=args.lr,
        steps=args.steps,
        patience=args.patience,
        batch_size=args.batch_size,
        factors=args.factors,
        seed=args.seed,
    )
    if grid is None:
        grid = sweep_grid(default_grid(spec))
    shapes(spec.form, lm, spec.layer, spec.rank)
    out = Path(args.out or f"runs/sweep-{pairs.name}-{spec.form}-{objective.name}-l{spec.layer}")
    if not args.quiet:
        print(
            f"sweep: {lm.spec}, concept {pairs.name} ({len(splits.train)} train / "
            f"{len(splits.test)} test pairs), {spec.form} {objective.name} at layer "
            f"{spec.layer}, {len(grid)} values of m"
            + (", completions scored with the end of turn" if args.end_of_turn else ""),
            file=sys.stderr,
        )
    result = run_sweep(
        lm,
        splits,
        spec,
        grid.tolist(),
        progress=not args.quiet,
        fits=not args.no_fit,
        end_of_turn=args.end_of_turn,
    )
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
                    "dtype": result["summary"]["dtype"][0].as_py(),
                    "summary": result["summary"].to_pylist(),
                    "fits": None
                    if result["fits"] is None
                    else {kind: report.numbers() for kind, report in result["fits"].items()},
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
    if result["fits"] is None:
        print("fits skipped (--no-fit): no decay curves, no fits.json")
    else:
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


def _search(args: argparse.Namespace) -> None:
    import time

    from steerfront.search.run import SearchSettings, run_search
    from steerfront.search.space import load_space

    if args.trials < 1:
        raise SteerfrontError(f"--trials must be at least 1, not {args.trials}")
    if args.resume:
        settings, space = _resumed(args)
    else:
        overrides = {
            "layers": args.layers,
            "forms": args.forms,
            "objectives": args.objectives,
            "steps": args.steps,
        }
        space = load_space(args.space, overrides)
        settings = SearchSettings(
            name=args.name or time.strftime("search-%Y%m%d-%H%M%S"),
            model=args.model,
            dtype=args.dtype,
            concept=args.concept,
            fmt=args.format,
            trials=args.trials,
            sampler=args.sampler,
            seed=args.seed,
            concurrency=args.concurrency,
            cpus_per_trial=args.cpus_per_trial,
            retries=args.retries,
            gpus_per_trial=args.gpus_per_trial,
            dense_m=args.dense_m,
            end_of_turn=args.end_of_turn,
            storage=args.storage,
            tracking_uri=args.tracking_uri,
            address=args.address or os.environ.get("RAY_ADDRESS"),
            quiet=args.quiet,
            extra={"max_util_drop": args.max_util_drop},
        )
    summary = run_search(space, settings, resume=bool(args.resume))
    if args.json:
        print(json.dumps(summary, default=str))
        return
    _print_front(summary["extended_front"])
    extended = summary["hypervolume_extended"]
    print(
        f"{summary['trials']} trials ({summary['failed']} failed): "
        f"{summary['model_loads']} model loads, {summary['trainings']} trainings, "
        f"{summary['cache_hits']} cache hits; hypervolume {summary['hypervolume']:.3f}"
        + (f" (extended front {extended:.3f})" if extended != summary["hypervolume"] else "")
    )
    if summary["best"]:
        print(f"best: {_describe(summary['best'])} -> {summary['folder']}/best/")
    print(
        f"MLflow: {summary['mlflow_tracking_uri']} (parent run {summary['mlflow_parent_run_id']})"
    )


def _resumed(args: argparse.Namespace) -> tuple[SearchSettings, SearchSpace]:
    from steerfront.search.run import STATE, SearchSettings
    from steerfront.search.space import SearchSpace

    store = Store(args.storage, args.resume)
    if not store.pull(STATE):
        raise SteerfrontError(f"no search named {args.resume!r} in {args.storage} to resume")
    state = json.loads((store.local / STATE).read_text())
    settings = SearchSettings(**{**state["settings"], "quiet": args.quiet})
    settings.address = args.address or os.environ.get("RAY_ADDRESS")  # the cluster may be new
    settings.tracking_uri = args.tracking_uri or settings.tracking_uri
    return settings, SearchSpace(**state["space"])


def _describe(record: dict) -> str:
    parts = [
        f"{record['form']} {record['objective']} layer {int(record['layer'])} m {record['m']:.3g}"
    ]
    if record.get("rank") is not None:
        parts.append(f"rank {int(record['rank'])}")
    if record.get("gamma") is not None:
        parts.append(f"gamma {record['gamma']:.3g}")
    parts.append(
        f"pref_odds {record['pref_odds']:.3f} util_odds {record['util_odds']:.3f} "
        f"(test {record['test_pref_odds']:.3f} / {record['test_util_odds']:.3f})"
    )
    return ", ".join(parts)


def _print_front(rows: list[dict]) -> None:
    """One line per front point; `dense` marks points of the extended front that are not a
    trial's own result."""
    heads = (
        "point",
        "form",
        "objective",
        "layer",
        "m",
        "rank",
        "gamma",
        "pref val",
        "util val",
        "drop val",
        "pref test",
        "util test",
    )
    print("  ".join(f"{h:>12}" for h in heads))
    for r in rows:
        cells = [
            "dense" if r.get("dense") else "trial",
            r["form"],
            r["objective"],
            int(r["layer"]),
            r["m"],
            r.get("rank"),
            r.get("gamma"),
            r["pref_odds"],
            r["util_odds"],
            r["util_drop"],
            r["test_pref_odds"],
            r["test_util_odds"],
        ]
        print("  ".join(f"{_cell(c):>12}" for c in cells))


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3f}"
    return str(value)


def _search_store(args: argparse.Namespace) -> Store:
    """The search named on the command line (or given as a folder), its files at hand."""
    from steerfront.search.run import STATE

    folder = Path(args.search)
    store = Store(str(folder.parent), folder.name) if folder.is_dir() else None
    store = store or Store(args.storage, args.search)
    store.pull(STATE, "trials.parquet", "front.parquet")
    if not (store.local / "trials.parquet").is_file():
        where = store.uri or store.local
        raise SteerfrontError(f"search {args.search!r}: no trials.parquet in {where}")
    return store


def _front(args: argparse.Namespace) -> None:
    from steerfront.search.best import read_front

    rows = read_front(_search_store(args).local, extended=not args.plain)
    if args.json:
        print(json.dumps(rows))
        return
    _print_front(rows)


def _best(args: argparse.Namespace) -> None:
    from steerfront.lm import load_model
    from steerfront.search.best import export, pick, read_front
    from steerfront.search.run import STATE
    from steerfront.search.trial import cached

    store = _search_store(args)
    folder = store.local
    record = pick(read_front(folder, extended=not args.plain), args.rule, args.max_util_drop)
    state = json.loads((folder / STATE).read_text())
    lm = load_model(state["settings"]["model"], dtype=args.dtype)
    source = cached(store, record["train_key"], required=True)
    out = export(record, Path(args.out) if args.out else folder / "best", source, lm)
    if not args.out:
        store.push("best")
    if args.json:
        print(json.dumps({"best": record, "exported": str(out)}))
        return
    kind = "plain" if args.plain else "extended"
    print(f"best ({args.rule}, {kind} front): {_describe(record)}")
    print(f"exported to {out}/: {', '.join(sorted(p.name for p in out.iterdir()))}")


def _ui(args: argparse.Namespace) -> None:
    from steerfront.search.tracking import serve_ui, tracking_uri

    serve_ui(tracking_uri(args.tracking_uri, args.storage), args.host, args.port)


def _generate(args: argparse.Namespace) -> None:
    from steerfront.lm import load_model
    from steerfront.methods.generate import generate
    from steerfront.methods.io import load_intervention, read_sidecar

    sidecar = read_sidecar(args.intervention)
    lm = load_model(args.model or sidecar.get("model") or DEFAULT_MODEL, dtype=args.dtype)
    intervention = load_intervention(args.intervention, lm)
    m = args.m if args.m is not None else sidecar.get("meta", {}).get("m", 1.0)
    unsteered, steered = generate(lm, args.prompt, intervention, m, args.max_new_tokens)
    print(
        f"unsteered:\n{unsteered}\n\n"
        f"steered ({intervention.form} at layer {intervention.layer}, m = {m:g}):\n{steered}"
    )


if __name__ == "__main__":
    sys.exit(main())
