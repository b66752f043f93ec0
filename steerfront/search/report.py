"""A search's results: front, hypervolume, figures and the best configuration, all kept
in the search folder and attached to the MLflow parent run."""

from __future__ import annotations

import math
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from steerfront.files import staged_dir
from steerfront.search.best import (
    assess,
    baselines,
    front,
    front_volume,
    points,
    without_pairs,
)
from steerfront.search.records import SCHEMA, typed
from steerfront.search.trial import SearchSetup
from steerfront.search.worker import Settled, in_workers, settle_and_export

if TYPE_CHECKING:
    from steerfront.search.tracking import Tracker

# What a search's folder holds once it ends, beside its cache and Ray's state.
RESULT_FILES = ("trials.parquet", "front.parquet", "pareto.png", "hypervolume.png", "best")
_COLOURS = {"vector": "tab:blue", "lora": "tab:green", "local_weight": "tab:red"}


def settle_searches(
    searches: list[tuple[list[dict], SearchSetup, float]],
    resources: dict[str, float],
    workers: int = 1,
) -> list[Settled]:
    """The model's part of each search's results (`records`, `setup`, `max_util_drop`): dense
    points' kl and test metrics, the pick, its export; in up to `workers` workers with
    `resources` at once, each loading the model once for its share of a launch's concepts."""
    jobs = [
        (points([r for r in records if r["status"] == "done"], extended=True), setup, drop)
        for records, setup, drop in searches
    ]
    todo = [job for job in jobs if job[0]]
    # settling scores the front's points (kl, test): its cost grows with both
    sizes = [len(front(candidates, *setup.axes)) * setup.size for candidates, setup, _ in todo]
    settled = iter(
        in_workers(settle_and_export, resources, todo, workers, sizes=sizes) if todo else []
    )
    empty = Settled([], None, "the search has no finished trials to pick from", {}, [])
    return [next(settled) if job[0] else empty for job in jobs]


def write_results(
    folder: Path,
    records: list[dict],
    setup: SearchSetup,
    tracker: Tracker,
    max_util_drop: float,
    reference: tuple[float, float],
    settled: Settled,
) -> dict:
    """Fronts, figures, best configuration and artifacts; the summary a search prints, from
    the model's part (`settle_searches`)."""
    done = [r for r in records if r["status"] == "done"]
    axes = setup.axes
    plain = front(points(done, extended=False), *axes)
    _add_dense_kl(done, settled.dense_kl)
    extended, best = settled.front, settled.best
    if settled.problem:
        print(f"steerfront: no best configuration: {settled.problem}", file=sys.stderr)
    if settled.files:  # the pick beats the unsteered model (`best`'s verdict)
        _write_folder(folder / "best", settled.files)
    else:  # an earlier end's pick (before a resume) is not this one
        shutil.rmtree(folder / "best", ignore_errors=True)
    _write_front(folder / "front.parquet", plain, extended)
    volumes = _volume_history(done, reference, False, *axes)
    volumes_extended = _volume_history(done, reference, True, *axes)
    chosen = None if best is None else extended[best]
    budget = setup.baseline["val_util_odds"] - max_util_drop
    plot_front(done, plain, extended, asdict(setup), chosen, budget, folder / "pareto.png", *axes)
    plot_hypervolume(volumes, volumes_extended, folder / "hypervolume.png")
    summary = {
        "name": setup.name,
        "trials": len(records),
        "failed": len(records) - len(done),
        "model_loads": int(sum(r.get("model_loaded") or 0 for r in done)),
        "trainings": int(sum(r.get("trained") or 0 for r in done)),
        "cache_hits": int(sum(r.get("cache_hit") or 0 for r in done)),
        "hypervolume": volumes[-1] if volumes else 0.0,
        "hypervolume_extended": volumes_extended[-1] if volumes_extended else 0.0,
        "hypervolume_reference": list(reference),
        "front_objectives": list(axes[0]),
        "max_kl": axes[1] if math.isfinite(axes[1]) else None,  # None: no constraint
        "infeasible": sum(1 for r in done if r.get("feasible") is False),
        "baseline": setup.baseline,
        "baselines": baselines(asdict(setup)),
        "front": [without_pairs(typed(r)) for r in plain],
        "extended_front": [without_pairs(typed(r)) for r in extended],
        "best": None if chosen is None else without_pairs(typed(chosen)),
        **_verdict(chosen, setup, max_util_drop),
        "exported": str(folder / "best") if settled.files else None,
        "folder": str(folder),
        "mlflow_tracking_uri": tracker.uri,
        "mlflow_parent_run_id": tracker.parent_run_id,
    }
    try:
        _log_artifacts(tracker, folder)
        tracker.finish()
    except Exception as exc:  # MLflow down: everything stays in the folder
        print(f"steerfront: warning: MLflow artifacts not logged ({exc})", file=sys.stderr)
    return summary


def _add_dense_kl(done: list[dict], scored: list[dict]) -> None:
    """Keep the kl that settling the front scored for dense points in their trials' records
    (the hypervolume's history and the plot then know which of them are infeasible)."""
    by_point = {(s["trial_id"], s["m"]): s for s in scored}
    for record in done:
        for point in record.get("dense_points") or []:
            known = by_point.get((record["trial_id"], point["m"]))
            if known is not None:
                point.update({k: v for k, v in known.items() if k not in ("trial_id", "m")})


def _verdict(chosen: dict | None, setup: SearchSetup, max_util_drop: float) -> dict:
    """The pick's verdict, as `best --json` gives it (`beats_baseline`, `gain`, ...)."""
    if chosen is None:
        keys = ("beats_baseline", "gain", "util_gain", "beats_prompted", "prompted_gain")
        return dict.fromkeys((*keys, "utility", "unknown"))
    return assess(chosen, asdict(setup), max_util_drop)


def _log_artifacts(tracker: Tracker, folder: Path) -> None:
    """The parent run's artifacts: the result files as in the folder, and best.yaml also at the
    top, where the MLflow UI shows it first."""
    for name in RESULT_FILES:
        if (folder / name).exists():
            tracker.log_artifact(folder / name)
    if (folder / "best" / "best.yaml").is_file():
        tracker.log_artifact(folder / "best" / "best.yaml")


def _write_front(path: Path, plain: list[dict], extended: list[dict]) -> None:
    """Both fronts in one table, marked by `front` ("plain" or "extended")."""
    fields = [f for f in SCHEMA if f.name != "dense_points"]
    schema = pa.schema([*fields, ("dense", pa.bool_()), ("front", pa.string())])
    rows = [{**r, "front": "plain"} for r in plain] + [{**r, "front": "extended"} for r in extended]
    rows = [{name: r.get(name) for name in schema.names} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Replace `folder` with these files (paths relative to it), all or nothing."""
    with staged_dir(folder, replace=True) as staging:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)


def _volume_history(
    done: list[dict],
    reference: tuple[float, float],
    extended: bool,
    objectives: tuple[str, str],
    max_kl: float,
) -> list[float]:
    """Hypervolume of the plain or extended front after each finished trial."""
    return [
        front_volume(done[: i + 1], reference, extended, objectives, max_kl)
        for i in range(len(done))
    ]


def _pyplot() -> ModuleType:
    """matplotlib's pyplot on the file backend, imported when a figure is drawn: every trial
    worker imports this module (with the driver's code) and draws nothing (25 MB each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_front(
    done: list[dict],
    plain: list[dict],
    extended: list[dict],
    setup: dict,
    chosen: dict | None,
    budget: float,
    path: Path,
    objectives: tuple[str, str] = ("pref_odds", "util_odds"),
    max_kl: float = math.inf,
) -> None:
    """Every finished trial coloured by form (dense points small, trials over `max_kl` as
    crosses), both fronts as lines, the unsteered model, the prompted model (when the
    search's `setup` has it), the picked point and the utility budget of the rule that picked
    it, on the front's two `objectives`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    xname, yname = objectives

    def xy(rows: list[dict]) -> tuple[list[float], list[float]]:
        return [_value(r, xname) for r in rows], [_value(r, yname) for r in rows]

    dense = [r for r in points(done, extended=True) if r["dense"]]
    over = [r for r in done if r.get("kl") is not None and r["kl"] > max_kl]
    for form, colour in _COLOURS.items():
        for group, size, alpha, label in ((dense, 5, 0.35, None), (done, 22, 0.8, form)):
            rows = [r for r in group if r["form"] == form and r not in over]
            if rows:
                ax.scatter(*xy(rows), s=size, color=colour, label=label, alpha=alpha)
    if over:
        ax.scatter(*xy(over), s=30, marker="x", color="grey", label="over --max-kl")
    for rows, style, label in (
        (plain, "-", "Pareto front (trials)"),
        (extended if dense else [], "--", "extended front (dense m, small dots)"),
    ):
        if rows:
            ax.plot(*xy(rows), style, color="black", lw=1.2, label=label)
    if yname == "util_odds":
        ax.axhline(budget, color="grey", ls=":", lw=1, label="utility budget (max-util-drop)")
    marks = [
        (row.get(f"val_{xname}", 0.0), row.get(f"val_{yname}", 0.0), marker, colour, label)
        for row, marker, colour, label in (
            (setup["baseline"], "*", "gold", "unsteered"),
            (setup.get("prompted"), "P", "orange", "prompted (instruction in the prompt)"),
        )
        if row
    ]
    if chosen is not None:
        marks.append((_value(chosen, xname), _value(chosen, yname), "D", "none", "picked (best)"))
    for x, y, marker, colour, label in marks:
        ax.scatter(
            [x], [y], marker=marker, s=160, color=colour, edgecolor="black", label=label, zorder=5
        )
    ax.set_xlabel(f"{xname} (validation)" if xname != "kl" else "kl (nats, neutral prompts)")
    ax.set_ylabel(f"{yname} (validation)" if yname != "kl" else "kl (nats, neutral prompts)")
    ax.set_title(f"steerfront search: {xname} vs {yname}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _value(row: dict, name: str) -> float:
    value = row.get(name)
    return math.nan if value is None else value


def plot_hypervolume(volumes: list[float], volumes_extended: list[float], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(volumes) + 1), volumes, "-o", ms=3, label="plain front")
    if volumes_extended != volumes:
        trials = range(1, len(volumes_extended) + 1)
        ax.plot(trials, volumes_extended, "--o", ms=3, label="extended front")
        ax.legend(fontsize=8)
    ax.set_xlabel("finished trials")
    ax.set_ylabel("hypervolume")
    ax.set_title("search progress")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_judged(front: list[dict], judged: list[dict], path: Path) -> None:
    """The extended front, each judged point coloured by its judged fluency (grey where the
    judge gives none) with its concept score beside it, the unsteered model a star, the
    prompted model an orange-edged plus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    if front:
        x, y = [r["pref_odds"] for r in front], [r["util_odds"] for r in front]
        ax.plot(x, y, "--", color="black", lw=1, label="extended front")
    fluency = [r.get("fluency") for r in judged]
    known = [f for f in fluency if f is not None]
    norm = matplotlib.colors.Normalize(min(known, default=0), max(known, default=1))
    for r, f in zip(judged, fluency, strict=True):
        colour = "lightgrey" if f is None else plt.cm.viridis(norm(f))
        marker, size, edge = {0: ("*", 260, "black"), -1: ("P", 200, "orange")}.get(
            r["point"], ("o", 90, "black")
        )
        ax.scatter([r["pref_odds"]], [r["util_odds"]], s=size, marker=marker, color=colour,
                   edgecolor=edge, linewidths=1.5, zorder=5)  # fmt: skip
        if r.get("concept") is not None:
            ax.annotate(f"{r['concept']:.2f}", (r["pref_odds"], r["util_odds"]), fontsize=8,
                        xytext=(6, 6), textcoords="offset points")  # fmt: skip
    if known:
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax)
        bar.set_label(f"judged fluency ({judged[0]['judge']})")
    ax.set_xlabel("pref_odds (validation)")
    ax.set_ylabel("util_odds (validation)")
    ax.set_title("judged points (star: unsteered; plus: prompted; label: concept score)")
    if front:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
