"""`steerfront best`: one configuration picked from a search's front, exported."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steerfront.cli.args import add_dtype, add_finished_search, describe, search_store
from steerfront.defaults import SEARCH


def add(commands: argparse._SubParsersAction) -> None:
    best = commands.add_parser(
        "best", help="pick one configuration from a search's front and export it"
    )
    add_finished_search(best)
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
    add_dtype(best)
    best.add_argument("--json", action="store_true", help="print the pick as JSON")
    best.set_defaults(run=run, parser=best)


def run(args: argparse.Namespace) -> None:
    from steerfront.lm import load_model
    from steerfront.methods.export import formats_for
    from steerfront.search.best import export, pick, read_front
    from steerfront.search.run import STATE
    from steerfront.search.trial import cached

    store = search_store(args.search, args.storage)
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
    print(f"best ({args.rule}, {kind} front): {describe(record)}")
    print(f"exported to {out}/: {', '.join(sorted(p.name for p in out.iterdir()))}")
    formats = " or --to ".join(formats_for(record["form"]))
    print(f"to serve it: steerfront export {out / 'intervention.safetensors'} --to {formats}")
