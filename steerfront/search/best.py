"""A search's fronts, picking one configuration from them, and exporting its intervention.

The plain front holds the trials' own results (what Optuna saw); the extended front adds every
trial's dense points (more values of m for the same trained intervention). A dense point is a
row like a trial's, with its own m and metrics and `dense` set.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from steerfront.defaults import JUDGE
from steerfront.errors import SteerfrontError
from steerfront.files import staged_dir
from steerfront.lm import LM
from steerfront.methods.io import export_peft, load_intervention, save_intervention
from steerfront.search.pareto import front_order, hypervolume, knee, pareto_mask
from steerfront.search.records import typed
from steerfront.search.tracking import POINT_METRICS

RULES = ("max-pref", "knee", "judged")
TEST_METRICS = tuple(f"test_{name}" for name in POINT_METRICS)


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


def volume_reference(baseline: dict, util_floor: float) -> tuple[float, float]:
    """The hypervolume's reference point, known before the first trial: the unsteered
    preference, and `util_floor` below the unsteered utility (validation)."""
    return baseline["val_pref_odds"], baseline["val_util_odds"] - util_floor


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
    return [typed(r) for r in pq.read_table(path).to_pylist() if r["front"] == kind]


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


def pick_judged(judged: list[dict], max_fluency_drop: float = JUDGE["max_fluency_drop"]) -> dict:
    """`judged`: the judged point with the highest concept score among those whose fluency is
    at least `1 - max_fluency_drop` times the unsteered model's (point 0)."""
    unsteered = next((r for r in judged if r["point"] == 0), None)
    if unsteered is None or unsteered.get("fluency") is None:
        name = judged[0]["judge"] if judged else "the judge"
        raise SteerfrontError(f"judge {name} gives no fluency score; --rule judged needs one")
    floor = (1 - max_fluency_drop) * unsteered["fluency"]
    allowed = [
        r
        for r in judged
        if r["point"] and r.get("concept") is not None and (r.get("fluency") or 0) >= floor
    ]
    if not allowed:
        raise SteerfrontError(
            f"no judged point keeps fluency >= {floor:.3g} ({1 - max_fluency_drop:.0%} of the "
            f"unsteered model's {unsteered['fluency']:.3g}); raise --max-fluency-drop"
        )
    return max(allowed, key=lambda r: r["concept"])


def read_judged(folder: Path) -> list[dict]:
    """The judged points a judge pass wrote to `judge/judged.parquet`."""
    path = folder / "judge" / "judged.parquet"
    if not path.is_file():
        raise SteerfrontError(
            f"{folder}: no judge/judged.parquet (judge the search first: steerfront judge NAME)"
        )
    return [typed(r) for r in pq.read_table(path).to_pylist()]


def beats_baseline(record: dict, baseline: dict) -> bool | None:
    """Whether the pick's test preference beats the unsteered model's beyond the noise: its
    interval lies above the baseline's (None for a search scored without intervals)."""
    low, high = record.get("test_pref_odds_lo"), baseline.get("test_pref_odds_hi")
    if low is None or high is None:
        return None
    return bool(low > high)


def intervals(record: dict) -> dict[str, list[float]]:
    """The pick's 95% intervals by metric, e.g. {"test_pref_odds": [low, high]}."""
    return {
        key[:-3]: [value, record[f"{key[:-3]}_hi"]]
        for key, value in record.items()
        if key.endswith("_lo") and value is not None
    }


def verdict(record: dict, baseline: dict) -> str:
    """One plain line: does the pick beat the unsteered model on test preference?"""
    beats = beats_baseline(record, baseline)
    if beats is None:
        return "verdict: unknown (this search kept no intervals; run it again to get them)"
    mine, theirs = (
        f"{r['test_pref_odds']:.3f} [{r['test_pref_odds_lo']:.3f}, {r['test_pref_odds_hi']:.3f}]"
        for r in (record, baseline)
    )
    if beats:
        return (
            f"verdict: beats the unsteered model on test preference ({mine} vs unsteered {theirs})"
        )
    return (
        f"verdict: does NOT beat the unsteered model on test preference beyond the noise "
        f"({mine} vs unsteered {theirs})"
    )


def provenance(setup: dict, record: dict) -> dict:
    """What `best.yaml` says beside the configuration: where it comes from and its verdict."""
    baseline = setup["baseline"]
    return {
        "search": setup["name"],
        "model": setup["model"],
        "concept": setup["concept"],
        "baseline": baseline,
        "beats_baseline": beats_baseline(record, baseline),
    }


def export(record: dict, folder: Path, source: Path, lm: LM, about: dict, replace: bool) -> Path:
    """Write `best.yaml` (the configuration, its intervals, what it was picked from and its
    verdict) and the chosen intervention, trained at `source` (plus a PEFT adapter for lora)."""
    intervention = load_intervention(source, lm)
    intervention.meta["m"] = record["m"]  # the strength the search chose, for `generate`
    config = {
        k: v for k, v in typed(record).items() if v is not None and k not in ("error", "front")
    }
    with staged_dir(folder, replace=replace) as staging:
        document = {"steerfront": version("steerfront"), **about, **config}
        (staging / "best.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        save_intervention(intervention, staging / "intervention", lm)
        if intervention.form == "lora":
            export_peft(intervention, staging / "peft_adapter", lm, m=record["m"])
    return folder
