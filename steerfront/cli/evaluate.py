"""`steerfront evaluate`: log-odds on a concept set, of the unsteered model or an exported
intervention at several strengths."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from steerfront.cli.args import (
    add_concept,
    add_dtype,
    add_end_of_turn,
    add_model,
    add_neutral_prompts,
    add_output,
    add_per_token,
    floats,
    intervention_model,
)
from steerfront.cli.checks import check_intervention
from steerfront.defaults import DEFAULT_MODEL, SEARCH
from steerfront.errors import SteerfrontError

if TYPE_CHECKING:
    from steerfront.data import PairSet

UNSTEERED_PAIRS = 6  # pairs of the unsteered per-pair table by default
SPLITS = ("test", "val", "train", "all")


def add(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score preference and utility log-odds of the unsteered model or an intervention",
    )
    add_model(evaluate, intervention=True)
    add_dtype(evaluate)
    add_concept(evaluate)
    add_end_of_turn(evaluate)
    add_per_token(evaluate)
    add_neutral_prompts(evaluate)
    evaluate.add_argument(
        "--intervention",
        default=None,
        help="an exported intervention (.safetensors or .json) to score at every --m beside "
        "the unsteered model (default: the unsteered model alone, pair by pair)",
    )
    evaluate.add_argument(
        "--m",
        type=floats,
        default=None,
        help="comma-separated strengths for --intervention (default: the one saved with it, "
        "else 1)",
    )
    evaluate.add_argument(
        "--split",
        choices=SPLITS,
        default=None,
        help="which pairs: test, val or train as a search splits them (60/20/20 by --seed, "
        "by prompt; a sweep's test pairs are the same), or all of the set (default: test with "
        "--intervention, so its figures compare with a search's test figures; all without)",
    )
    evaluate.add_argument(
        "--seed",
        type=int,
        default=SEARCH["seed"],
        help=f"seed of the split, as the search's or sweep's --seed (default: {SEARCH['seed']})",
    )
    evaluate.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="score the first N pairs of --split "
        f"(default: {UNSTEERED_PAIRS}; with --intervention, all)",
    )
    add_output(evaluate, "results", progress=False)
    evaluate.set_defaults(run=run, parser=evaluate)


def run(args: argparse.Namespace) -> None:
    from steerfront.data import load_concept

    if args.pairs is not None and args.pairs < 1:
        raise SteerfrontError(f"--pairs must be at least 1, not {args.pairs}")
    if args.m is not None and args.intervention is None:
        raise SteerfrontError("--m needs --intervention (the unsteered model has no m)")
    pairs = load_concept(args.concept, args.format)
    args.split = args.split or ("all" if args.intervention is None else "test")
    part = chosen_part(args, pairs)
    if args.intervention is None:
        unsteered(args, part, pairs.name)
    else:
        steered(args, part, pairs.name)


def chosen_part(args: argparse.Namespace, pairs: PairSet) -> PairSet:
    """The pairs `--split` names: all of them, or a part split as a search splits them."""
    if args.split == "all":
        return pairs
    splits = pairs.split(SEARCH["val_fraction"], SEARCH["test_fraction"], args.seed)
    part = getattr(splits, args.split)
    if len(part) == 0:
        raise SteerfrontError(
            f"--split {args.split}: concept {pairs.name!r} has {len(pairs)} pairs, which leave "
            f"no {args.split} pairs (use --split all)"
        )
    return part


def which(args: argparse.Namespace, count: int, part: PairSet) -> str:
    """The pairs scored, in words: how many of which split."""
    of = f"{count} of " if count < len(part) else ""
    if args.split == "all":
        return f"{of}all {len(part)} pairs"
    return f"{of}{len(part)} {args.split} pairs: search split, seed {args.seed}"


def unsteered(args: argparse.Namespace, pairs: PairSet, concept: str) -> None:
    """The unsteered model pair by pair, then the means."""
    from steerfront.data import encode_pairs
    from steerfront.lm import dtype_name
    from steerfront.models import load_checked
    from steerfront.scoring.evaluate import evaluate

    lm = load_checked(args.model or DEFAULT_MODEL, dtype=args.dtype)
    encoded = encode_pairs(lm.tokenizer, pairs, end_of_turn=args.end_of_turn)
    scores = evaluate(
        lm, encoded[: args.pairs or UNSTEERED_PAIRS], None, 0.0, per_token=args.per_token
    )
    summary = scores.summary().to_pylist()[0]
    if args.json:
        rows = scores.table().drop_columns(["m"]).to_pylist()
        what = {"model": lm.spec, "dtype": dtype_name(lm.dtype), "concept": concept}
        print(json.dumps({**what, **part_fields(args), **scale(args), "pairs": rows, **summary}))
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
        f"accuracy {summary['accuracy']:.2f} (model {lm.spec}, concept {concept}, "
        f"{which(args, len(scores.m), pairs)}, unsteered{', per token' if args.per_token else ''})"
    )


def steered(args: argparse.Namespace, pairs: PairSet, concept: str) -> None:
    """An exported intervention at every m, m = 0 (the unsteered model) first."""
    from steerfront.data import encode_pairs
    from steerfront.data.prompts import neutral_prompts
    from steerfront.defaults import KL_NEW_TOKENS, KL_PROMPTS, KL_TOKENS
    from steerfront.lm import dtype_name
    from steerfront.methods.io import load_intervention, read_sidecar
    from steerfront.models import load_checked
    from steerfront.scoring.evaluate import check_grid, evaluate
    from steerfront.scoring.kl import kl_scores, unsteered_answers

    sidecar = read_sidecar(args.intervention)
    try:
        saved = sidecar["meta"].get("m", 1.0)
        ms = check_grid(saved if args.m is None else args.m).tolist()
    except SteerfrontError as err:
        raise SteerfrontError(f"--m: {err}") from None
    model = intervention_model(args.intervention, sidecar, args.model)
    check_intervention(args.intervention, model)  # before the model loads
    lm = load_checked(model, dtype=args.dtype)
    intervention = load_intervention(args.intervention, lm)
    encoded = encode_pairs(lm.tokenizer, pairs, end_of_turn=args.end_of_turn)[: args.pairs]
    grid = sorted({0.0, *ms})
    scores = evaluate(lm, encoded, intervention, grid, per_token=args.per_token)
    rows = scores.summary().to_pylist()
    baseline = next(row["util_odds"] for row in rows if row["m"] == 0.0)
    prompts = neutral_prompts(args.neutral_prompts, KL_PROMPTS)
    answers = unsteered_answers(lm, prompts, KL_NEW_TOKENS)
    steered_grid = [m for m in grid if m != 0.0]
    kl = {0.0: dict.fromkeys(kl_scores(lm, None, 0.0, answers).metrics()[0.0], 0.0)}
    if steered_grid:
        scored = kl_scores(lm, intervention, steered_grid, answers, tokens=KL_TOKENS)
        kl.update(scored.metrics(SEARCH["seed"]))
    for row in rows:
        row["util_drop"] = baseline - row["util_odds"]
        row.update(kl[float(row["m"])])  # m = 0: kl 0, by definition
    where = f"{intervention.form} at layer {intervention.layer}"
    if args.json:
        what = {"model": lm.spec, "dtype": dtype_name(lm.dtype), "concept": concept}
        what.update(intervention=args.intervention, form=intervention.form)
        what.update(layer=intervention.layer, pairs=len(encoded), **part_fields(args))
        what.update(**scale(args), rows=rows)
        print(json.dumps(what))
        return
    heads = ("m", "pref_odds", "± se", "util_odds", "± se", "util_drop", "accuracy", "kl")
    print("  ".join(f"{h:>10}" for h in heads))
    columns = ("m", "pref_odds", "pref_se", "util_odds", "util_se", "util_drop", "accuracy", "kl")
    for row in rows:
        print("  ".join(f"{row[c]:>10.3f}" for c in columns))
    print(
        f"model {lm.spec}, concept {concept} ({which(args, len(encoded), pairs)}), {where}; "
        f"m = 0 is the unsteered model{', per token' if args.per_token else ''}; kl in nats "
        f"from the unsteered model on {len(answers)} neutral prompts"
    )


def scale(args: argparse.Namespace) -> dict[str, bool]:
    """How the completions were scored: numbers on different scales must not be compared."""
    return {"per_token": args.per_token, "end_of_turn": args.end_of_turn}


def part_fields(args: argparse.Namespace) -> dict:
    """Which pairs were scored, for `--json`."""
    return {"split": args.split, **({} if args.split == "all" else {"split_seed": args.seed})}
