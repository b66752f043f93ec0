"""`steerfront front`: a search's Pareto front, below the unsteered model."""

from __future__ import annotations

import argparse
import json

from steerfront.cli.args import add_finished_search, add_output, search_state, search_store
from steerfront.cli.report import print_front


def add(commands: argparse._SubParsersAction) -> None:
    front = commands.add_parser("front", help="print a search's Pareto front")
    add_finished_search(front)
    add_output(
        front,
        '{"baseline": the unsteered model\'s scores, "front": the points}',
        progress=False,
    )
    front.set_defaults(run=run, parser=front)


def run(args: argparse.Namespace) -> None:
    from steerfront.search.best import read_front

    store = search_store(args.search, args.storage)
    baseline = search_state(store)["setup"]["baseline"]
    rows = read_front(store.local, extended=not args.plain)
    if args.json:
        print(json.dumps({"baseline": baseline, "front": rows}))
        return
    print_front(rows, baseline)
