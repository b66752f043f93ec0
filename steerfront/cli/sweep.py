"""`steerfront sweep`: one intervention trained once and scored over an m-grid."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from steerfront.cli.args import (
    add_concept,
    add_dtype,
    add_end_of_turn,
    add_model,
    add_neutral_prompts,
    add_output,
    add_per_token,
    floats,
    per_form,
)
from steerfront.cli.checks import check_layer, check_out, model_config
from steerfront.defaults import (
    FACTORS,
    FORMS,
    LEARNING_RATE,
    OBJECTIVES,
    SPLIT,
    TEST_FRACTION,
    TRAIN,
)
from steerfront.errors import SteerfrontError


def add(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="train one intervention and score it over an m-grid (curves, fits, manifold)",
    )
    add_model(sweep)
    add_dtype(sweep)
    add_concept(sweep)
    add_end_of_turn(sweep)
    add_per_token(sweep)
    add_neutral_prompts(sweep)
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
        type=floats,
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
        help=f"learning rate (default: {per_form(LEARNING_RATE)})",
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
        type=floats,
        default=None,
        help="training factors a, comma-separated (default: "
        + per_form({f: f"{v[0]:g}..{v[-1]:g}" for f, v in FACTORS.items()})
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
        help="new or empty output folder (default: runs/sweep-CONCEPT-FORM-OBJECTIVE-lLAYER)",
    )
    sweep.add_argument(
        "--force",
        action="store_true",
        help="replace an output folder that holds anything (default: refuse it)",
    )
    add_output(sweep, "results")

    sweep.set_defaults(run=run, parser=sweep)


def run(args: argparse.Namespace) -> None:
    from steerfront.data import load_concept
    from steerfront.methods import Objective, TrainSpec
    from steerfront.methods.interventions import shapes
    from steerfront.models import load_checked
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
    if args.out:
        check_out(Path(args.out), args.force)
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
    # What the model's configuration and the flags tell is checked before the model loads.
    config = model_config(args.model)
    layer = args.layer if args.layer is not None else config.num_hidden_layers // 2
    spec = TrainSpec(
        form=args.form,
        layer=check_layer(layer, config, args.model),
        objective=objective,
        rank=args.rank,
        lr=args.lr,
        steps=args.steps,
        patience=args.patience,
        batch_size=args.batch_size,
        factors=args.factors,
        seed=args.seed,
    )
    out = Path(args.out or f"runs/sweep-{pairs.name}-{spec.form}-{objective.name}-l{spec.layer}")
    check_out(out, args.force)
    if args.rank < 1:
        raise SteerfrontError(f"--rank must be at least 1, not {args.rank}")
    lm = load_checked(args.model, dtype=args.dtype)
    lm.check_layer(spec.layer)
    if grid is None:
        grid = sweep_grid(default_grid(spec))
    shapes(spec.form, lm, spec.layer, spec.rank)
    if not args.quiet:
        print(
            f"sweep: {lm.spec}, concept {pairs.name} ({len(splits.train)} train / "
            f"{plural(len(splits.test), 'test pair')}), {spec.form} {objective.name} at layer "
            f"{spec.layer}, {len(grid)} values of m"
            + (", completions scored with the end of turn" if args.end_of_turn else "")
            + (", per token" if args.per_token else ""),
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
        per_token=args.per_token,
        neutral_prompts=args.neutral_prompts,
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
                    "per_token": args.per_token,
                    "end_of_turn": args.end_of_turn,
                    "summary": result["summary"].to_pylist(),
                    "fits": None
                    if result["fits"] is None
                    else {kind: report.numbers() for kind, report in result["fits"].items()},
                    "manifold": result["manifold"],
                }
            )
        )
        return
    print_sweep(result, out)


def print_sweep(result: dict, out: Path) -> None:
    columns = (
        "m",
        "train_pref_odds",
        "test_pref_odds",
        "train_util_odds",
        "test_util_odds",
        "test_accuracy",
        "off_manifold",
        "knn_distance",
        "kl",
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
        "kl",
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
    print(f"manifold: {manifold_finding(result['manifold'])}")
    files = ", ".join(sorted(path.name for path in out.iterdir()))
    print(f"wrote {out}/: {files}")


def manifold_finding(manifold: dict) -> str:
    """The manifold's dimension and its tie to utility loss, unless too few points make any
    subspace explain them all."""
    from steerfront.scoring.manifold import MIN_POINTS

    if not manifold["reliable"]:
        return (
            f"unreliable ({manifold['points']} points for k = {manifold['k']} components; "
            f"a finding needs at least {MIN_POINTS} and twice k)"
        )
    return (
        f"k = {manifold['k']} components explain {manifold['explained']:.0%} of unsteered "
        f"variance; corr(off-manifold, utility loss) = "
        f"{manifold['corr_off_manifold_util_loss']:.3f}"
    )


def plural(count: int, noun: str) -> str:
    """`1 test pair`, `30 test pairs`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
