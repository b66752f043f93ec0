"""A search's fronts, picking one configuration from them, and exporting its intervention.

The plain front holds the trials' own results (what Optuna saw); the extended front adds every
trial's dense points (more values of m for the same trained intervention). A dense point is a
row like a trial's, with its own m and metrics and `dense` set.
"""

from __future__ import annotations

import math
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
from steerfront.scoring.logodds import bootstrap_interval
from steerfront.search import axes
from steerfront.search.pareto import front_order, hypervolume, knee, pareto_mask
from steerfront.search.records import PER_PAIR, typed
from steerfront.search.tracking import KL_METRICS, POINT_METRICS

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
            point = {k: v for k, v in point.items() if k not in KL_METRICS or v is not None}
            blank = dict.fromkeys((*TEST_METRICS, *KL_METRICS))  # not the trial's own
            rows.append({**own, **blank, **point, "dense": True})
    return rows


def front(
    rows: list[dict],
    objectives: tuple[str, str] = axes.DEFAULT,
    max_kl: float = axes.MAX_KL,
) -> list[dict]:
    """The non-dominated rows on validation `objectives` among those within `max_kl`, by the
    first objective."""
    rows = [r for r in rows if axes.feasible(r, max_kl)]
    if not rows:
        return []
    xy = axes.coordinates(rows, objectives)
    return [rows[i] for i in front_order(xy, pareto_mask(xy))]


def volume_reference(
    baseline: dict,
    util_floor: float,
    objectives: tuple[str, str] = axes.DEFAULT,
    max_kl: float = axes.MAX_KL,
) -> tuple[float, float]:
    """The hypervolume's reference point, known before the first trial (`axes.reference`):
    by default the unsteered preference, and `util_floor` below the unsteered utility."""
    return axes.reference(baseline, util_floor, objectives, max_kl)


def front_volume(
    done: list[dict],
    reference: tuple[float, float],
    extended: bool,
    objectives: tuple[str, str] = axes.DEFAULT,
    max_kl: float = axes.MAX_KL,
) -> float:
    """Hypervolume of the plain or extended front: one number to compare searches by."""
    rows = [r for r in points(done, extended) if axes.feasible(r, max_kl)]
    if not rows:
        return 0.0
    return hypervolume(axes.coordinates(rows, objectives), reference)


def read_front(folder: Path, extended: bool = True) -> list[dict]:
    """The plain or extended front a finished search wrote to `front.parquet`."""
    path = folder / "front.parquet"
    if not path.is_file():
        raise SteerfrontError(
            f"{folder}: no front.parquet (the search has not finished; resume it with --resume)"
        )
    kind = "extended" if extended else "plain"
    return [typed(r) for r in pq.read_table(path).to_pylist() if r["front"] == kind]


def pick(
    rows: list[dict],
    rule: str = "max-pref",
    max_util_drop: float = 1.0,
    max_kl: float = axes.MAX_KL,
    objectives: tuple[str, str] = axes.DEFAULT,
) -> dict:
    """`max-pref`: highest pref_odds with util_drop <= max_util_drop; `knee`: the front's knee;
    both among the points within `max_kl`."""
    candidates = front(rows, objectives, max_kl)
    if not candidates:
        if rows and not any(axes.feasible(r, max_kl) for r in rows):
            least = min(r["kl"] for r in rows)
            raise SteerfrontError(
                f"no front configuration keeps kl <= {max_kl:g} (the least is {least:.3f}); "
                "raise --max-kl"
            )
        raise SteerfrontError("the search has no finished trials to pick from")
    if rule == "knee":
        points = axes.coordinates(candidates, objectives)
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


def pick_judged(
    judged: list[dict],
    max_fluency_drop: float = JUDGE["max_fluency_drop"],
    max_kl: float = axes.MAX_KL,
) -> dict:
    """`judged`: the judged point with the highest concept score among those whose fluency is
    at least `1 - max_fluency_drop` times the unsteered model's (point 0) and whose kl is
    known and within `max_kl` (a judged point off the front has no kl, and a judge's fluency
    can miss broken text: "Yesnonoinnoin..." kept 0.72 on agreeableness before the local judge
    counted repeated tokens)."""
    unsteered = next((r for r in judged if r["point"] == 0), None)
    if unsteered is None or unsteered.get("fluency") is None:
        name = judged[0]["judge"] if judged else "the judge"
        raise SteerfrontError(f"judge {name} gives no fluency score; --rule judged needs one")
    floor = (1 - max_fluency_drop) * unsteered["fluency"]
    allowed = [
        r
        for r in judged
        if r["point"] > 0  # a steered point: not the unsteered (0) nor the prompted (-1) model
        and r.get("concept") is not None
        and (r.get("fluency") or 0) >= floor
        and (not math.isfinite(max_kl) or r.get("kl") is not None)
        and axes.feasible(r, max_kl)
    ]
    if not allowed:
        raise SteerfrontError(
            f"no judged point keeps fluency >= {floor:.3g} ({1 - max_fluency_drop:.0%} of the "
            f"unsteered model's {unsteered['fluency']:.3g}) with a known kl within {max_kl:g}; "
            "raise --max-fluency-drop or --max-kl"
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


def paired_gain(values: list[float] | None, base: list[float] | None, seed: int) -> dict | None:
    """The mean per-pair gain of `values` over `base` (the same pairs in the same order) with
    its 95% bootstrap interval, drawn as every interval of the split is (seeded `seed`), and
    the number of pairs; None when either side's per-pair scores are unknown."""
    if values is None or base is None or len(values) != len(base) or len(values) == 0:
        return None
    gain = np.asarray(values, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    low, high = bootstrap_interval(gain[:, None], seed)
    return {
        "mean": float(gain.mean()),
        "lo": float(low[0]),
        "hi": float(high[0]),
        "pairs": len(gain),
    }


def assess(record: dict, setup: dict, max_util_drop: float) -> dict:
    """The verdict on a point against the unsteered model, on the test pairs both were scored
    on: `gain` and `util_gain` (per pair, point minus unsteered: mean, lo, hi, pairs),
    `beats_baseline` (the gain's interval lies above 0; None when unknown, with the reason in
    `unknown`), `prompted_gain` and `beats_prompted` the same against the prompted baseline
    (None for a search made before it existed) and `utility` (the point's test util_drop
    against the budget `max_util_drop`)."""
    seed = setup["seed"]
    base_pref = (setup.get("baseline_pref") or {}).get("test")
    base_util = (setup.get("baseline_util") or {}).get("test")
    prompted_pref = (setup.get("prompted_pref") or {}).get("test")
    gain = paired_gain(record.get("test_pref_pairs"), base_pref, seed)
    prompted_gain = paired_gain(record.get("test_pref_pairs"), prompted_pref, seed)
    util_gain = paired_gain(record.get("test_util_pairs"), base_util, seed)
    unknown = None
    if record.get("test_pref_odds") is None:
        unknown = (
            "this point was never scored on test: a dense point off the extended front is "
            "scored on validation only"
        )
    elif gain is None:
        unknown = "this search kept no per-pair test scores; run it again to get them"
    utility = None
    if record.get("test_util_drop") is not None:
        utility = {
            "util_drop": record["test_util_drop"],
            "lo": record.get("test_util_drop_lo"),
            "hi": record.get("test_util_drop_hi"),
            "budget": max_util_drop,
            "over_budget": bool(record["test_util_drop"] > max_util_drop),
        }
    return {
        "beats_baseline": None if gain is None else bool(gain["lo"] > 0),
        "gain": gain,
        "util_gain": util_gain,
        "beats_prompted": None if prompted_gain is None else bool(prompted_gain["lo"] > 0),
        "prompted_gain": prompted_gain,
        "utility": utility,
        "unknown": unknown,
    }


def intervals(record: dict) -> dict[str, list[float]]:
    """The pick's 95% intervals by metric, e.g. {"test_pref_odds": [low, high]}."""
    return {
        key[:-3]: [value, record[f"{key[:-3]}_hi"]]
        for key, value in record.items()
        if key.endswith("_lo") and value is not None
    }


def verdict(assessment: dict) -> str:
    """Two plain lines from `assess`: does the point beat the unsteered model on test
    preference (the per-pair gain), and the prompted model (when the search scored it), and
    where is its test utility against the budget?"""
    gain = assessment["gain"]
    if assessment.get("unknown") or gain is None:
        why = assessment.get("unknown") or "no per-pair test scores"
        lines = [f"verdict: unknown ({why})"]
    else:
        shown = (
            f"gain {gain['mean']:+.2f} [{gain['lo']:.2f}, {gain['hi']:.2f}] "
            f"over {gain['pairs']} pairs"
        )
        if assessment["beats_baseline"]:
            lines = [f"verdict: beats the unsteered model on test preference: {shown}"]
        else:
            lines = [
                "verdict: does NOT beat the unsteered model on test preference beyond the "
                f"noise: {shown}"
            ]
        prompted = assessment.get("prompted_gain")
        if prompted is not None:
            beats = assessment["beats_prompted"]
            how = "beats prompting too" if beats else "does not beat prompting"
            band = f"[{prompted['lo']:.2f}, {prompted['hi']:.2f}]"
            lines[0] += f"; {how}: gain {prompted['mean']:+.2f} {band}"
    utility = assessment.get("utility")
    if utility is not None:
        where = "over budget" if utility["over_budget"] else "within budget"
        band = (
            ""
            if utility["lo"] is None or utility["hi"] is None
            else f" [{utility['lo']:.2f}, {utility['hi']:.2f}]"
        )
        lines.append(
            f"utility: test util_drop {utility['util_drop']:+.2f}{band} vs budget "
            f"{utility['budget']:.2f} ({where})"
        )
    return "\n".join(lines)


def baselines(setup: dict) -> dict[str, dict | None]:
    """What `--json` gives as `baselines`: the unsteered model's scores and the prompted
    model's with its instruction (None for a search made before the prompted baseline)."""
    prompted = setup.get("prompted") or None
    if prompted is not None:
        from steerfront.search.trial import prompting_instruction

        prompted = {**prompted, "instruction": prompting_instruction(setup["concept"])}
    return {"unsteered": setup["baseline"], "prompted": prompted}


def without_pairs(record: dict) -> dict:
    """A point as users read it (JSON, YAML): without its per-pair test scores."""
    return {k: v for k, v in record.items() if k not in PER_PAIR}


def provenance(setup: dict, record: dict, max_util_drop: float) -> dict:
    """What `best.yaml` says beside the configuration: where it comes from and its verdict."""
    assessment = assess(record, setup, max_util_drop)
    return {
        "search": setup["name"],
        "model": setup["model"],
        "concept": setup["concept"],
        "baseline": setup["baseline"],
        **{k: v for k, v in assessment.items() if k != "unknown"},
    }


def export(record: dict, folder: Path, source: Path, lm: LM, about: dict, replace: bool) -> Path:
    """Write `best.yaml` (the configuration, its intervals, what it was picked from and its
    verdict) and the chosen intervention, trained at `source` (plus a PEFT adapter for lora)."""
    intervention = load_intervention(source, lm)
    intervention.meta["m"] = record["m"]  # the strength the search chose, for `generate`
    config = {
        k: v
        for k, v in without_pairs(typed(record)).items()
        if v is not None and k not in ("error", "front")
    }
    with staged_dir(folder, replace=replace) as staging:
        document = {"steerfront": version("steerfront"), **about, **config}
        (staging / "best.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        save_intervention(intervention, staging / "intervention", lm)
        if intervention.form == "lora":
            export_peft(intervention, staging / "peft_adapter", lm, m=record["m"])
    return folder
