"""A search's fronts, picking one configuration from them, and exporting its intervention.

The plain front holds the trials' own results (what Optuna saw); the extended front adds every
trial's dense points (more values of m for the same trained intervention). A dense point is a
row like a trial's, with its own m and metrics and `dense` set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from steerfront.errors import SteerfrontError
from steerfront.files import staged_dir
from steerfront.lm import LM
from steerfront.methods.io import export_peft, load_intervention, save_intervention
from steerfront.search.pareto import front_order, hypervolume, knee, pareto_mask

RULES = ("max-pref", "knee")
TEST_METRICS = ("test_pref_odds", "test_util_odds", "test_util_drop", "test_accuracy")


def read_trials(folder: Path) -> list[dict]:
    """The kept trials of a search. Read in one go: the driver replaces the file while
    workers read it, and a reader that reopened it midway would see two versions."""
    path = folder / "trials.parquet"
    if not path.is_file():
        return []
    return pq.read_table(pa.BufferReader(path.read_bytes())).to_pylist()


def points(done: list[dict], extended: bool) -> list[dict]:
    """The finished trials' own results, and with `extended` their dense points too."""
    rows = []
    for record in done:
        own = {k: v for k, v in record.items() if k != "dense_points"}
        rows.append({**own, "dense": False})
        for point in (record.get("dense_points") or []) if extended else []:
            rows.append({**own, **dict.fromkeys(TEST_METRICS), **point, "dense": True})
    return rows


def front(rows: list[dict]) -> list[dict]:
    """The non-dominated rows on validation (pref_odds, util_odds), by pref_odds."""
    if not rows:
        return []
    xy = np.array([[r["pref_odds"], r["util_odds"]] for r in rows], dtype=float)
    return [rows[i] for i in front_order(xy, pareto_mask(xy))]


def volume_reference(done: list[dict], baseline: dict) -> tuple[float, float]:
    """One reference point for both fronts: the unsteered preference, the worst utility seen."""
    utils = [r["util_odds"] for r in points(done, extended=True)]
    return baseline["val_pref_odds"], float(np.nanmin(utils)) if utils else 0.0


def front_volume(done: list[dict], reference: tuple[float, float], extended: bool) -> float:
    """Hypervolume of the plain or extended front: one number to compare searches by."""
    rows = points(done, extended)
    if not rows:
        return 0.0
    return hypervolume(np.array([[r["pref_odds"], r["util_odds"]] for r in rows]), reference)


def read_front(folder: Path, extended: bool = True) -> list[dict]:
    """The plain or extended front a finished search wrote to `front.parquet`."""
    path = folder / "front.parquet"
    if not path.is_file():
        raise SteerfrontError(
            f"{folder}: no front.parquet (the search has not finished; resume it with --resume)"
        )
    kind = "extended" if extended else "plain"
    return [r for r in pq.read_table(path).to_pylist() if r["front"] == kind]


def pick(rows: list[dict], rule: str = "max-pref", max_util_drop: float = 1.0) -> dict:
    """`max-pref`: highest pref_odds with util_drop <= max_util_drop; `knee`: the front's knee."""
    candidates = front(rows)
    if not candidates:
        raise SteerfrontError("the search has no finished trials to pick from")
    if rule == "knee":
        points = np.array([[r["pref_odds"], r["util_odds"]] for r in candidates], dtype=float)
        return candidates[knee(points, np.ones(len(candidates), dtype=bool))]
    if rule != "max-pref":
        raise SteerfrontError(f"unknown rule {rule!r} (choose from {', '.join(RULES)})")
    allowed = [r for r in candidates if r["util_drop"] <= max_util_drop]
    if not allowed:
        least = min(r["util_drop"] for r in candidates)
        raise SteerfrontError(
            f"no front configuration keeps util_drop <= {max_util_drop} (the least is "
            f"{least:.3f}); raise --max-util-drop or use --rule knee"
        )
    return max(allowed, key=lambda r: r["pref_odds"])


def export(record: dict, folder: Path, source: Path, lm: LM) -> Path:
    """Write `best.yaml` and the chosen intervention, trained at `source` (plus a PEFT adapter
    for lora, at the chosen m)."""
    intervention = load_intervention(source, lm)
    intervention.meta["m"] = record["m"]  # the strength the search chose, for `generate`
    with staged_dir(folder, replace=True) as staging:
        config = {
            k: _plain(v) for k, v in record.items() if v is not None and k not in ("error", "front")
        }
        (staging / "best.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        save_intervention(intervention, staging / "intervention", lm)
        if intervention.form == "lora":
            export_peft(intervention, staging / "peft_adapter", lm, m=record["m"])
    return folder


def _plain(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
