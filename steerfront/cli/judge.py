"""`steerfront judge`: what the steered model writes at points of a finished search's front,
scored by a judge, and whether the log-odds agree with it."""

from __future__ import annotations

import argparse
import json
import os

from steerfront.cli.args import (
    add_judge,
    add_storage,
    judge_settings,
    search_state,
    search_store,
)
from steerfront.cli.report import print_judged


def add(commands: argparse._SubParsersAction) -> None:
    judge = commands.add_parser(
        "judge",
        help="generate at points of a finished search's front and judge what the model writes",
        description="The unsteered model and up to K points spread along the extended front "
        "answer the concept's test prompts (or --prompts); a judge scores the answers; the "
        "agreement of pref_odds and util_odds with the judge's concept and fluency scores is "
        "printed. Results in SEARCH/judge/ and MLflow. Run it again to finish a pass that "
        "stopped: nothing already generated or judged is done twice.",
    )
    judge.add_argument("search", help="search name (or its folder)")
    add_storage(judge)
    add_judge(judge, on_search=False)
    judge.add_argument(
        "--seed", type=int, default=None, help="sampling seed (default: the search's seed)"
    )
    judge.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    judge.add_argument(
        "--json", action="store_true", help="print the judged points as JSON (last line)"
    )
    judge.set_defaults(run=run, parser=judge)


def run(args: argparse.Namespace) -> None:
    from steerfront.search.judged import judge_search
    from steerfront.search.run import ray_session
    from steerfront.search.settings import SearchSettings
    from steerfront.search.tracking import tracking_uri

    store = search_store(args.search, args.storage)
    state = search_state(store)
    address = os.environ.get("RAY_ADDRESS")  # the search's cluster may be gone
    settings = SearchSettings(**{**state["settings"], "quiet": args.quiet, "address": address})
    settings.storage = store.uri.rsplit("/", 1)[0] if store.uri else str(store.local.parent)
    settings.store = store  # where it was found (a folder given by path, say)
    tracking_uri(settings.tracking_uri, settings.storage)  # an object store needs a server
    seed = state["setup"]["seed"] if args.seed is None else args.seed
    judge = judge_settings(args, seed)
    with ray_session(settings.address):
        summary = judge_search(settings, judge)
    if args.json:
        print(json.dumps(summary, default=str))
        return
    print_judged(summary)
