"""`steerfront front`: a search's Pareto front, below the unsteered and prompted models."""

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
        '{"baseline": the unsteered model\'s scores, "baselines": {"unsteered", "prompted"}, '
        '"front": the points}',
        progress=False,
    )
    front.set_defaults(run=run, parser=front)


def run(args: argparse.Namespace) -> None:
    from steerfront.search.best import baselines, read_front

    store = search_store(args.search, args.storage)
    setup = search_state(store)["setup"]
    rows = read_front(store.local, extended=not args.plain)
    both = baselines(setup)
    if args.json:
        print(json.dumps({"baseline": setup["baseline"], "baselines": both, "front": rows}))
        return
    print_front(rows, both)
