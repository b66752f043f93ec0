"""A launch: one search per concept in one Ray job (the workers load the model once and serve
every concept's trials), and the report across them."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from steerfront.data.concepts import concept_label, grouped, split_groups
from steerfront.errors import SteerfrontError
from steerfront.files import write_atomic
from steerfront.search.records import write_rows
from steerfront.search.run import drive
from steerfront.search.settings import SearchSettings
from steerfront.search.space import SearchSpace
from steerfront.search.storage import Store
from steerfront.search.tracking import Tracker, tracking_uri

STATE = "launch.json"
REPORT = "report.parquet"
REPORT_FIGURE = "report.png"


def expand(concepts: list[str], folder: Path) -> list[str]:
    """The concepts as given, a parquet set with a concept column split into one file per
    concept in `folder` (the launch's `concepts/`)."""
    out = []
    for concept in concepts:
        column = grouped(concept)
        out.extend(split_groups(concept, column, folder) if column else [concept])
    return out


def run_launch(
    space: SearchSpace, name: str, template: SearchSettings, concepts: list[str]
) -> dict:
    """Run a new launch `name`: a search per concept (`template`'s settings, named
    NAME-CONCEPT), to each one's budget; its summary. Nothing is left behind when a concept
    is refused (before anything trains)."""
    tracking_uri(template.tracking_uri, template.storage)  # an object store needs a server
    store = Store(template.storage, name)
    if store.pull(STATE):
        raise SteerfrontError(
            f"a launch named {name!r} exists in {store.uri or store.local}; resume it with "
            f"--resume {name} or choose another --name"
        )
    if store.local.is_dir() and any(store.local.iterdir()):
        raise SteerfrontError(
            f"--name {name}: {store.local} exists and holds other files; choose another --name"
        )
    fresh = not store.local.exists()
    state: dict = {"name": name, "storage": template.storage}
    try:
        concepts = expand(concepts, store.local / "concepts")
        searches = [
            replace(
                template,
                name=f"{name}-{concept_label(c)}",
                concept=c,
                extra={**template.extra, "launch": name},
            )
            for c in concepts
        ]
        names = [s.name for s in searches]
        if len(set(names)) < len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise SteerfrontError(f"launch {name}: two concepts would both be search {twice!r}")
        state["searches"] = names

        def ready() -> str:
            store.local.mkdir(parents=True, exist_ok=True)
            tracker = Tracker(
                template.tracking,
                name,
                artifact_root=store.local.parent / "mlartifacts",
                kind="launch",
            )
            tracker.log_params(
                {"concepts": ",".join(concepts), "trials_per_concept": template.trials}
            )
            state["parent_run_id"] = tracker.parent_run_id
            _save(store, state)
            return tracker.parent_run_id

        summaries = drive(space, searches, store, ready=ready)
    except BaseException:
        if fresh and "parent_run_id" not in state:  # refused before it started: no trace
            shutil.rmtree(store.local, ignore_errors=True)
        raise
    return _finish(store, state, summaries)


def resume_launch(
    storage: str,
    name: str,
    adjust: Callable[[SearchSettings], SearchSettings] = lambda s: s,
    quiet: bool = False,
) -> dict:
    """Resume launch `name`: every search of it, from where each stopped, its settings as
    `adjust` returns them (what the resume's flags may change: the cluster, the judge)."""
    store = Store(storage, name)
    if not store.pull(STATE):
        raise SteerfrontError(f"no launch named {name!r} in {storage} to resume")
    state = json.loads((store.local / STATE).read_text())
    searches, space = [], None
    for search in state["searches"]:
        kept = Store(storage, search)
        if not kept.pull("search.json"):
            raise SteerfrontError(f"launch {name}: search {search!r} is missing from {storage}")
        document = json.loads((kept.local / "search.json").read_text())
        searches.append(adjust(SearchSettings(**{**document["settings"], "quiet": quiet})))
        space = SearchSpace(**document["space"])
    return _finish(store, state, drive(space, searches, store, resume=True))


def _save(store: Store, state: dict) -> None:
    write_atomic(store.local / STATE, json.dumps(state, indent=2).encode())
    store.push(STATE)


def is_launch(storage: str, name: str) -> bool:
    return Store(storage, name).pull(STATE)


def _finish(store: Store, state: dict, summaries: list[dict]) -> dict:
    """The report across the launch's searches, kept beside its state and in MLflow."""
    rows = sorted((report_row(s) for s in summaries), key=_order)
    write_report(store.local, rows)
    store.push(REPORT, REPORT_FIGURE)
    loads = sum(s["model_loads"] for s in summaries)
    state["model_loads"] = loads
    _save(store, state)
    try:
        first = summaries[0]
        tracker = Tracker(first["mlflow_tracking_uri"], state["name"], state["parent_run_id"])
        tracker.log_table({k: [r[k] for r in rows] for k in rows[0]}, "report.json")
        tracker.log_artifact(store.local / REPORT_FIGURE)
        tracker.log_metric("model_loads", loads, step=0)
        tracker.finish()
    except Exception as exc:  # MLflow down: the report stays in the launch's folder
        print(f"steerfront: warning: launch report not logged to MLflow ({exc})")
    return {
        "launch": state["name"],
        "folder": str(store.local),
        "report": rows,
        "model_loads": loads,
        "searches": summaries,
    }


def report_row(summary: dict) -> dict:
    """One concept's line of the report, from its search's summary."""
    best, gain, prompted = summary["best"] or {}, summary["gain"], summary["prompted_gain"]
    judged = _judged_pick(summary)
    if summary["best"] is None:
        verdict = "no pick"
    elif summary["beats_baseline"]:
        verdict = "beats unsteered" + (
            " and prompting" if summary["beats_prompted"] else ", not prompting"
        )
    else:
        verdict = "does not beat unsteered"
    return {
        "concept": summary["concept"],
        "search": summary["name"],
        "trials": summary["trials"],
        "failed": summary["failed"],
        "form": best.get("form"),
        "objective": best.get("objective"),
        "layer": best.get("layer"),
        "m": best.get("m"),
        "gain": None if gain is None else gain["mean"],
        "gain_lo": None if gain is None else gain["lo"],
        "gain_hi": None if gain is None else gain["hi"],
        "prompted_gain": None if prompted is None else prompted["mean"],
        "prompted_gain_lo": None if prompted is None else prompted["lo"],
        "prompted_gain_hi": None if prompted is None else prompted["hi"],
        "kl": best.get("kl"),
        "verdict": verdict,
        "judged_concept": judged.get("concept"),
        "judged_fluency": judged.get("fluency"),
        "prior_layer": summary.get("prior_layer"),
    }


def _judged_pick(summary: dict) -> dict:
    """The judge's scores of the search's pick, when the search was judged (the judge pass
    includes the pick)."""
    best = summary["best"]
    if best is None:
        return {}
    for point in summary.get("judged") or []:
        if point.get("trial_id") == best.get("trial_id") and point.get("m") == best.get("m"):
            return point
    return {}


def _order(row: dict) -> tuple[bool, float]:
    """Highest gain over unsteered first; concepts without a pick last."""
    return row["gain"] is None, -(row["gain"] or 0.0)


def write_report(folder: Path, rows: list[dict]) -> None:
    """`report.parquet` (a row per concept) and `report.png` (gain against kl per concept)."""
    from steerfront.search.report import _pyplot

    write_rows(folder / REPORT, rows)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for row in rows:
        if row["gain"] is None or row["kl"] is None or not math.isfinite(row["kl"]):
            continue
        low, high = row["gain"] - row["gain_lo"], row["gain_hi"] - row["gain"]
        ax.errorbar(row["kl"], row["gain"], yerr=[[low], [high]], fmt="o", capsize=3)
        ax.annotate(row["concept"], (row["kl"], row["gain"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)  # fmt: skip
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("kl of the pick (nats/token)")
    ax.set_ylabel("test preference gain over unsteered (95% interval)")
    ax.set_title("steerability per concept")
    fig.tight_layout()
    fig.savefig(folder / REPORT_FIGURE, dpi=110)
    plt.close(fig)


def read_report(storage: str, name: str) -> dict:
    """A launch's report as it was written (`steerfront report`)."""
    import pyarrow.parquet as pq

    store = Store(storage, name)
    if not store.pull(STATE):
        raise SteerfrontError(f"no launch named {name!r} in {storage}")
    if not store.pull(REPORT):
        raise SteerfrontError(f"launch {name} has no report yet (resume it with --resume {name})")
    state = json.loads((store.local / STATE).read_text())
    rows = pq.read_table(store.local / REPORT).to_pylist()
    return {"launch": name, "folder": str(store.local), "report": rows,
            "model_loads": state.get("model_loads")}  # fmt: skip
