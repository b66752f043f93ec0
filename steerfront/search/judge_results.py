"""A judge pass's results: per point the mean and standard error of every score, the agreement
of the log-odds with the judge, and the generations shown side by side."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from steerfront.defaults import SEARCH
from steerfront.errors import SteerfrontError
from steerfront.search.best import read_front
from steerfront.search.judge_points import POINT_FIELDS
from steerfront.search.records import typed
from steerfront.search.settings import SearchSettings


def aggregate(
    selected: list[dict],
    rows: list[dict],
    names: list[str],
    judge: str,
    probe_accuracy: float | None,
) -> list[dict]:
    """Per point: its record, and the mean and standard error of every score over its
    generations (`<score>`, `<score>_se`; unscored generations left out), with their count."""
    judged = []
    for point in selected:
        mine = [r for r in rows if r["point"] == point["point"]]
        record = {**typed(point), "judge": judge, "n": len(mine), "probe_accuracy": probe_accuracy}
        for name in names:
            values = np.array([r[name] for r in mine if r.get(name) is not None], dtype=float)
            record[name] = float(values.mean()) if len(values) else None
            se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else None
            record[f"{name}_se"] = None if se is None else float(se)
        record["unparsed"] = int(sum(r.get("unparsed", 0) for r in mine))
        judged.append(record)
    return judged


AGREEMENT_MIN_POINTS = 8  # no coefficient over fewer judged points: too few to read
BOOTSTRAP = 2000  # resamples of the points for rho's 95% interval
PAIRS = {"pref_concept": ("pref_odds", "concept"), "util_fluency": ("util_odds", "fluency")}


def agree(judged: list[dict], seed: int = 0) -> dict[str, dict]:
    """Spearman's rho over the judged points, pref_odds against the concept score and
    util_odds against fluency, each `{"rho", "lo", "hi", "points"}`: `lo`..`hi` is a 95%
    percentile-bootstrap interval over the points. With fewer than `AGREEMENT_MIN_POINTS`
    points (or a judge without that score, or a constant score) rho and its interval are None;
    only `points` is given."""
    out = {}
    for key, (odds, score) in PAIRS.items():
        both = [
            (r[odds], r[score])
            for r in judged
            if r.get(score) is not None and r.get(odds) is not None
        ]
        out[key] = spearman_interval(np.array(both, dtype=float).reshape(-1, 2), seed)
    return out


def spearman_interval(xy: np.ndarray, seed: int = 0) -> dict:
    """`{"rho", "lo", "hi", "points"}` for the rows of `xy` (see `agree`)."""
    from scipy.stats import spearmanr

    n = len(xy)
    none = {"rho": None, "lo": None, "hi": None, "points": n}
    if n < AGREEMENT_MIN_POINTS:
        return none
    with warnings.catch_warnings():  # a constant column: no rank correlation
        warnings.simplefilter("ignore")
        rho = spearmanr(xy[:, 0], xy[:, 1]).statistic
        if not math.isfinite(rho):
            return none
        draws = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n))
        # rank within each resample; a resample with a constant column gives nan: dropped
        boot = np.array([spearmanr(xy[d, 0], xy[d, 1]).statistic for d in draws])
    boot = boot[np.isfinite(boot)]
    lo, hi = np.percentile(boot, [2.5, 97.5]) if len(boot) else (math.nan, math.nan)
    return {"rho": float(rho), "lo": float(lo), "hi": float(hi), "points": n}


def agreement_text(entry: dict) -> str:
    """One agreement entry in words: rho and its interval, and "not enough evidence" when the
    interval contains 0 (or too few points for any coefficient)."""
    if entry.get("rho") is None:
        return f"not enough evidence ({entry['points']} points; {AGREEMENT_MIN_POINTS} needed)"
    text = f"{entry['rho']:+.2f} [{entry['lo']:+.2f}, {entry['hi']:+.2f}]"
    if entry["lo"] <= 0 <= entry["hi"]:
        text += ", not enough evidence"
    return text


def point_summary(record: dict, names: list[str]) -> dict:
    keys = [*POINT_FIELDS, "on_front", "pref_odds", "util_odds", "kl", "n", "probe_accuracy"]
    keys.append("unparsed")
    return {k: record.get(k) for k in [*keys, *names]}


def unparsed_answer(row: dict, names: list[str]) -> str | None:
    """The first answer in `row` that held no rating, if any."""
    missing = [n for n in names if f"{n}_answer" in row and row.get(n) is None]
    return row[f"{missing[0]}_answer"] if missing else None


def examples(
    rows: list[dict],
    judged: list[dict],
    names: list[str],
    searched: dict | None,
    max_kl: float,
    count: int = 2,
) -> dict:
    """The first `count` prompts' generations (sample 0), with their scores, of the unsteered
    model and of the picked point: the one `best --rule judged` picks within the search's kl
    budget `max_kl`, else (no judged point qualifies) the search's own pick `searched`, when
    it was judged."""
    from steerfront.search.best import pick_judged

    why = None
    try:
        picked, rule = pick_judged(judged, max_kl=max_kl), "judged"
    except SteerfrontError as err:
        same = [r for r in judged if searched and _same_point(r, searched)]
        picked, rule = (same[0], "max-pref") if same else (None, None)
        why = f"{err}; the search's own pick (best --rule max-pref) " + (
            "was not among the judged points" if searched else "is none"
        )
    if picked is None:
        return {"picked": None, "rule": None, "rows": [], "why": why}
    shown = []
    for prompt in list(dict.fromkeys(r["prompt"] for r in rows))[:count]:
        pair = {"prompt": prompt}
        for side, point in (("unsteered", 0), ("picked", picked["point"])):
            row = next(
                r for r in rows if r["point"] == point and r["prompt"] == prompt and not r["sample"]
            )
            pair[side] = {"text": row["text"], **{n: row.get(n) for n in names}}
        shown.append(pair)
    return {"picked": point_summary(picked, names), "rule": rule, "rows": shown}


def _same_point(a: dict, b: dict) -> bool:
    return a.get("trial_id") == b.get("trial_id") and math.isclose(a["m"], b["m"], abs_tol=1e-9)


def searched_pick(folder: Path, settings: SearchSettings) -> dict | None:
    """The point the search itself picks (`best`'s default rule), or None."""
    from steerfront.search.best import pick

    try:
        return pick(
            read_front(folder),
            max_util_drop=settings.extra.get("max_util_drop", SEARCH["max_util_drop"]),
            max_kl=settings.max_kl,
            objectives=tuple(settings.front_objectives),
        )
    except SteerfrontError:
        return None
