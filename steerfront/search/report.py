"""A search's results: front, hypervolume, figures and the best configuration, all kept
in the search folder and attached to the MLflow parent run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from steerfront.errors import SteerfrontError  # noqa: E402
from steerfront.lm import load_model  # noqa: E402
from steerfront.search.best import export, front, pick  # noqa: E402
from steerfront.search.pareto import hypervolume  # noqa: E402

if TYPE_CHECKING:
    from steerfront.search.run import SearchSettings
    from steerfront.search.tracking import Tracker

_COLOURS = {"vector": "tab:blue", "lora": "tab:green", "local_weight": "tab:red"}


def write_results(
    folder: Path,
    records: list[dict],
    baseline: dict,
    tracker: Tracker,
    settings: SearchSettings,
) -> dict:
    """Front, figures, best configuration and artifacts; the summary a search prints."""
    done = [r for r in records if r["status"] == "done"]
    front_rows = front(done)
    pq.write_table(pa.Table.from_pylist(front_rows or [{}]), folder / "front.parquet")
    volumes = _volume_history(done, baseline)
    plot_front(done, front_rows, baseline, folder / "pareto.png")
    plot_hypervolume(volumes, folder / "hypervolume.png")
    best = None
    try:
        best = pick(done, max_util_drop=settings.extra.get("max_util_drop", 1.0))
        lm = load_model(settings.model)
        export(best, folder / "best", folder / "cache", lm)
    except SteerfrontError as exc:
        print(f"steerfront: no best configuration: {exc}", file=sys.stderr)
    summary = {
        "name": settings.name,
        "trials": len(records),
        "failed": len(records) - len(done),
        "model_loads": int(sum(r.get("model_loaded") or 0 for r in done)),
        "trainings": int(sum(r.get("trained") or 0 for r in done)),
        "cache_hits": int(sum(r.get("cache_hit") or 0 for r in done)),
        "hypervolume": volumes[-1] if volumes else 0.0,
        "front": front_rows,
        "best": best,
        "folder": str(folder),
        "mlflow_tracking_uri": tracker.uri,
        "mlflow_parent_run_id": tracker.parent_run_id,
    }
    try:
        tracker.log_artifacts(_artifacts(folder))
        tracker.finish()
    except Exception as exc:  # MLflow down: everything stays in the folder
        print(f"steerfront: warning: MLflow artifacts not logged ({exc})", file=sys.stderr)
    return summary


def _artifacts(folder: Path) -> Path:
    """The parent run's artifacts: tables, figures, best.yaml and the exported intervention."""
    out = folder / "artifacts"
    out.mkdir(exist_ok=True)
    for name in ("trials.parquet", "front.parquet", "pareto.png", "hypervolume.png"):
        if (folder / name).is_file():
            (out / name).write_bytes((folder / name).read_bytes())
    best = folder / "best"
    if best.is_dir():
        for path in best.rglob("*"):
            if path.is_file():
                target = out / (
                    "best.yaml" if path.name == "best.yaml" else path.relative_to(folder)
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    return out


def _volume_history(done: list[dict], baseline: dict) -> list[float]:
    """Hypervolume after each finished trial, against the final reference point."""
    if not done:
        return []
    points = np.array([[r["pref_odds"], r["util_odds"]] for r in done], dtype=float)
    reference = (baseline["val_pref_odds"], float(np.nanmin(points[:, 1])))
    return [hypervolume(points[: i + 1], reference) for i in range(len(points))]


def plot_front(done: list[dict], front_rows: list[dict], baseline: dict, path: Path) -> None:
    """Every finished trial coloured by form, the front as a line, the unsteered model marked."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for form, colour in _COLOURS.items():
        rows = [r for r in done if r["form"] == form]
        if rows:
            ax.scatter(
                [r["pref_odds"] for r in rows],
                [r["util_odds"] for r in rows],
                s=22,
                color=colour,
                label=form,
                alpha=0.8,
            )
    if front_rows:
        ax.plot(
            [r["pref_odds"] for r in front_rows],
            [r["util_odds"] for r in front_rows],
            "-",
            color="black",
            lw=1.2,
            label="Pareto front",
        )
    ax.scatter(
        [baseline["val_pref_odds"]],
        [baseline["val_util_odds"]],
        marker="*",
        s=160,
        color="gold",
        edgecolor="black",
        label="unsteered",
        zorder=5,
    )
    ax.set_xlabel("pref_odds (validation)")
    ax.set_ylabel("util_odds (validation)")
    ax.set_title("steerfront search: preference vs utility")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hypervolume(volumes: list[float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(volumes) + 1), volumes, "-o", ms=3)
    ax.set_xlabel("finished trials")
    ax.set_ylabel("hypervolume")
    ax.set_title("search progress")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
