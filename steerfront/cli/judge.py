"""`steerfront judge`: what the steered model writes at points of a finished search's front,
scored by a judge, and whether the log-odds agree with it."""

from __future__ import annotations

import argparse
import json
import os
import sys

from steerfront.cli.args import (
    add_judge,
    add_output,
    add_storage,
    judge_settings,
    search_state,
    search_store,
)
from steerfront.cli.report import print_judged
from steerfront.errors import SteerfrontError
from steerfront.search.storage import Store

FOLDER = "judge"  # the pass's folder in the search's (search.judged.FOLDER)


def add(commands: argparse._SubParsersAction) -> None:
    judge = commands.add_parser(
        "judge",
        help="generate at points of a finished search's front and judge what the model writes",
        description="The unsteered model and up to K points on and off the extended front "
        "answer the concept's test prompts (or --prompts); a judge scores the answers; the "
        "agreement of pref_odds and util_odds with the judge's concept and fluency scores "
        "(Spearman's rho with a bootstrap interval, from 8 points) is printed. Results in "
        "SEARCH/judge/ and MLflow. Run it again to finish a pass that "
        "stopped: nothing already generated or judged is done twice.",
    )
    judge.add_argument("search", help="search name (or its folder)")
    add_storage(judge)
    add_judge(judge, on_search=False)
    judge.add_argument(
        "--seed", type=int, default=None, help="sampling seed (default: the search's seed)"
    )
    judge.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier pass made with other settings (default: refuse, naming them)",
    )
    add_output(judge, "the judged points (last line)")
    judge.set_defaults(run=run, parser=judge)


def run(args: argparse.Namespace) -> None:
    from steerfront.search.judge_points import select_points
    from steerfront.search.judged import judge_search
    from steerfront.search.run import ray_session
    from steerfront.search.settings import SearchSettings
    from steerfront.search.tracking import tracking_uri
    from steerfront.search.trial import SearchSetup

    store = search_store(args.search, args.storage)
    state = search_state(store)
    address = os.environ.get("RAY_ADDRESS")  # the search's cluster may be gone
    settings = SearchSettings(**{**state["settings"], "quiet": args.quiet, "address": address})
    settings.storage = store.uri.rsplit("/", 1)[0] if store.uri else str(store.local.parent)
    settings.store = store  # where it was found (a folder given by path, say)
    tracking_uri(settings.tracking_uri, settings.storage)  # an object store needs a server
    seed = state["setup"]["seed"] if args.seed is None else args.seed
    judge = judge_settings(args, seed)
    if judge.chosen:  # a bad --points is named before any pass is compared with this one
        select_points(store.local, SearchSetup(**state["setup"]), judge)
    changed = earlier_pass(store, judge.stored())
    folder = store.local / FOLDER
    if changed and not args.force:
        raise SteerfrontError(
            f"{folder}/ holds a judge pass made with other settings ({changed}); pass --force "
            "to replace it, or repeat those settings to finish or reuse it"
        )
    if changed and not args.quiet:
        print(f"judge: replacing the earlier pass in {folder}/ ({changed})", file=sys.stderr)
    with ray_session(settings.address):
        summary = judge_search(settings, judge)
    if args.json:
        print(json.dumps(summary, default=str))
        return
    print_judged(summary)


# Settings that do not change what a pass holds: how fast it asks, and where the key is.
_SAME_PASS = ("concurrency", "key_env", "url")


def earlier_pass(store: Store, settings: dict) -> str | None:
    """How the judge pass already in the search's folder differs from `settings`, in words
    (`max_new_tokens 64, not 24`), or None: no pass, or one with the same settings (which a
    run finishes or reuses). A pass that stopped before its end is known by its generations'
    settings."""
    import pyarrow.parquet as pq

    store.pull(f"{FOLDER}/judge.json", f"{FOLDER}/generations.parquet")
    folder = store.local / FOLDER
    try:
        before = json.loads((folder / "judge.json").read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        before = None
    if before is None and (folder / "generations.parquet").is_file():
        keys = ("max_new_tokens", "temperature", "seed")
        rows = pq.read_table(folder / "generations.parquet").select(list(keys)).to_pylist()
        before = {**settings, **(rows[0] if rows else {})}
        if any(row != rows[0] for row in rows):
            before["max_new_tokens"] = "mixed"
    if before is None:
        return None
    differ = [
        f"{name} {before.get(name)}, not {value}"
        for name, value in settings.items()
        if name not in _SAME_PASS and before.get(name) != value
    ]
    return "; ".join(differ) or None
