"""`steerfront best`: one configuration picked from a search's front, checked against the
unsteered model, exported."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steerfront.cli.args import (
    add_dtype,
    add_finished_search,
    add_max_kl,
    add_output,
    max_kl,
    search_budget,
    search_state,
    search_store,
)
from steerfront.cli.report import describe
from steerfront.defaults import JUDGE, SEARCH
from steerfront.errors import SteerfrontError
from steerfront.search.best import RULES


def add(commands: argparse._SubParsersAction) -> None:
    best = commands.add_parser(
        "best",
        help="pick one configuration from a search's front, check it against the unsteered "
        "model on test pairs, and export it",
    )
    add_finished_search(best)
    best.add_argument(
        "--rule",
        choices=RULES,
        default="max-pref",
        help="max-pref: highest pref_odds within --max-util-drop; knee: the front's knee; "
        "judged: the judged point with the highest concept score within --max-fluency-drop "
        "(after steerfront judge) (default: max-pref)",
    )
    best.add_argument(
        "--max-util-drop",
        type=float,
        default=None,
        help="most utility log-odds to give up; the test util_drop is reported against it "
        f"(default: the search's own, else {SEARCH['max_util_drop']})",
    )
    add_max_kl(best, "the search's own")
    best.add_argument(
        "--max-fluency-drop",
        type=float,
        default=JUDGE["max_fluency_drop"],
        help="judged: most share of the unsteered model's judged fluency to give up "
        f"(default: {JUDGE['max_fluency_drop']})",
    )
    best.add_argument(
        "--out", default=None, help="export folder (default: SEARCH/best-RULE, e.g. best-knee)"
    )
    best.add_argument(
        "--force",
        action="store_true",
        help="export even a pick that does not beat the unsteered model (or whose verdict "
        "is unknown), and replace an earlier export in the same folder",
    )
    add_dtype(best)
    add_output(best, "the pick", progress=False)
    best.set_defaults(run=run, parser=best)


def run(args: argparse.Namespace) -> int:
    """Exit status 1 when the pick does not beat the unsteered model (nothing exported)."""
    from steerfront.lm import load_model
    from steerfront.methods.export import formats_for
    from steerfront.search.best import (
        assess,
        baselines,
        export,
        intervals,
        pick,
        pick_judged,
        provenance,
        read_front,
        read_judged,
        verdict,
        without_pairs,
    )
    from steerfront.search.trial import cached

    store = search_store(args.search, args.storage)
    state = search_state(store)
    setup = state["setup"]
    budget = search_budget(state, args.max_util_drop)
    limit = max_kl(args.max_kl, setup.get("max_kl", SEARCH["max_kl"]))
    objectives = tuple(setup.get("front_objectives") or SEARCH["front_objectives"])
    if args.rule == "judged":
        store.pull("judge/judged.parquet")
        record = pick_judged(read_judged(store.local), args.max_fluency_drop, limit)
    else:
        front = read_front(store.local, extended=not args.plain)
        record = pick(front, args.rule, budget, limit, objectives)
    assessment = assess(record, setup, budget)
    name = f"best-{args.rule}"
    out = Path(args.out) if args.out else store.local / name
    if out.exists() and any(out.iterdir()) and not args.force:
        raise SteerfrontError(
            f"{out} holds an earlier export; pass --force to replace it, or --out DIR"
        )
    exported = None
    if assessment["beats_baseline"] or args.force:
        lm = load_model(setup["model"], dtype=args.dtype)
        source = cached(store, record["train_key"], required=True)
        about = provenance(setup, record, budget)
        exported = export(record, out, source, lm, about, replace=True)
        if not args.out:
            store.push(name)
    if args.json:
        document = {
            "best": without_pairs(record),
            "baseline": setup["baseline"],
            "baselines": baselines(setup),
            "ci": intervals(record),
            **assessment,
            "exported": None if exported is None else str(exported),
        }
        print(json.dumps(document))
    else:
        kind = "plain" if args.plain else "extended"
        print(f"best ({args.rule}, {kind} front): {describe(record)}")
        print(verdict(assessment))
        if exported is None:
            print("nothing exported (pass --force to export it anyway)")
        else:
            files = ", ".join(sorted(p.name for p in exported.iterdir()))
            print(f"exported to {exported}/: {files}")
            formats = " or --to ".join(formats_for(record["form"]))
            intervention = exported / "intervention.safetensors"
            print(f"to serve it: steerfront export {intervention} --to {formats}")
    return 1 if exported is None else 0
