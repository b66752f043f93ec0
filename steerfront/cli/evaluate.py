"""`steerfront evaluate`: the unsteered model's log-odds on a concept set."""

from __future__ import annotations

import argparse
import json

from steerfront.cli.args import add_concept, add_dtype, add_end_of_turn, add_model
from steerfront.errors import SteerfrontError


def add(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="score the unsteered model's preference and utility log-odds"
    )
    add_model(evaluate)
    add_dtype(evaluate)
    add_concept(evaluate)
    add_end_of_turn(evaluate)
    evaluate.add_argument(
        "--pairs", type=int, default=6, help="how many pairs to score (default: 6)"
    )
    evaluate.add_argument("--json", action="store_true", help="print results as JSON")
    evaluate.set_defaults(run=run, parser=evaluate)


def run(args: argparse.Namespace) -> None:
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
