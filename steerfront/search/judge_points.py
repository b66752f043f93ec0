"""Which points a judge pass judges and what they answer: the unsteered and prompted models,
then the chosen points or K spread along the extended front; the concept's test prompts; the
concept in words."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from steerfront.defaults import CONCEPT_TEXT
from steerfront.errors import SteerfrontError
from steerfront.search.best import points, read_front, read_trials
from steerfront.search.judge_settings import JudgeSettings, read_chosen
from steerfront.search.records import typed
from steerfront.search.trial import SearchSetup

BASELINES = {0: "unsteered", -1: "prompted"}  # the judged points that are baselines, by number
# `asked`: the prompted model's instruction (None for the others), put into the prompts it
# answers; the judge reads its answers against the plain prompts, as every other point's.
POINT_FIELDS = (
    "point", "trial_id", "form", "objective", "layer", "m", "rank", "gamma", "asked"
)  # fmt: skip


def select_points(folder: Path, setup: SearchSetup, settings: JudgeSettings) -> list[dict]:
    """The unsteered model (point 0) and the prompted one (point -1: the unsteered model
    with `SearchSetup.instruction` in its prompts; none for a search made before it), then
    the chosen points, or up to K points on and off the extended front (`spread`) and the
    search's own pick, which is always judged."""
    baselines = [
        {
            "point": point,
            "m": 0.0,
            "pref_odds": scores["val_pref_odds"],
            "util_odds": scores["val_util_odds"],
            "kl": scores.get("val_kl", 0.0),  # the unsteered model's kl from itself is 0
            "test_pref_odds": scores.get("test_pref_odds"),
            "test_util_odds": scores.get("test_util_odds"),
            "asked": instruction,
        }
        for point, scores, instruction in (
            (0, setup.baseline, None),
            (-1, setup.prompted, setup.instruction),
        )
        if scores
    ]
    if settings.chosen:
        done = [r for r in read_trials(folder) if r["status"] == "done"]
        rows = [typed(r) for r in points(done, extended=True)]
        front = {(r["trial_id"], r["m"]): r for r in read_front(folder, extended=True)}
        picked = []
        for trial_id, m in read_chosen(settings.chosen):
            mine = [r for r in rows if r["trial_id"] == trial_id]
            if not mine:
                raise SteerfrontError(f"--points: no finished trial {trial_id!r} in {folder}")
            m = next(r["m"] for r in mine if not r["dense"]) if m is None else m
            match = [r for r in mine if math.isclose(r["m"], m, rel_tol=0, abs_tol=1e-9)]
            if not match:
                scored = ", ".join(f"{r['m']:g}" for r in mine)
                raise SteerfrontError(
                    f"--points: trial {trial_id} was not scored at m = {m:g} (it was at {scored})"
                )
            picked.append(front.get((trial_id, match[0]["m"]), match[0]))
    else:
        front = [{**r, "on_front": True} for r in read_front(folder, extended=True)]
        done = [r for r in read_trials(folder) if r["status"] == "done"]
        on = {(r["trial_id"], r["m"]) for r in front}
        off = [
            {**typed(r), "on_front": False}
            for r in points(done, extended=True)
            if (r["trial_id"], r["m"]) not in on
        ]
        picked = spread(front, off, settings.points)
        chosen = _searched_pick(folder, setup, front)
        if chosen is not None and all(r is not front[chosen] for r in picked):
            picked.append(front[chosen])  # the search's own pick is always judged
    return [*baselines, *({**r, "point": i + 1} for i, r in enumerate(picked))]


def spread(front: list[dict], off: list[dict], k: int) -> list[dict]:
    """Up to `k` points for the agreement of log-odds with the judge, on and off the front:
    half of them (more when too few are off it) evenly along the front (by pref_odds, its ends
    included), the rest off it, taken in turn from each form and evenly over m within a
    form, so that the ranks compared span the forms and m, not only the front's tradeoff. A
    point at m = 0 is the unsteered model (point 0) again, so it is never taken."""
    off = [r for r in off if r.get("m")]
    n_off = min(len(off), k - min(len(front), math.ceil(k / 2)))
    n_front = min(len(front), k - n_off)
    chosen = [front[i] for i in _even(len(front), n_front)]
    forms: dict[str, list[dict]] = {}
    for r in sorted(off, key=lambda r: (r.get("m") or 0.0, str(r.get("trial_id")))):
        forms.setdefault(f"{r.get('form')}/{r.get('objective')}", []).append(r)
    quota = dict.fromkeys(forms, 0)
    while sum(quota.values()) < n_off:  # one more from each form in turn, while it has any
        for key in forms:
            if quota[key] < len(forms[key]) and sum(quota.values()) < n_off:
                quota[key] += 1
    for key, rows in forms.items():
        chosen += [rows[i] for i in _even(len(rows), quota[key])]
    return chosen


def _even(n: int, k: int) -> list[int]:
    """`k` of `range(n)` spread evenly, both ends included."""
    if n == 0 or k <= 0:
        return []
    return list(np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(int)))


def _searched_pick(folder: Path, setup: SearchSetup, front: list[dict]) -> int | None:
    """The index in `front` of the point the search picks (`best`'s default rule, with the
    search's own budgets), or None."""
    import json

    from steerfront.defaults import SEARCH
    from steerfront.search.best import pick
    from steerfront.search.settings import STATE

    if not front:
        return None
    state = json.loads((folder / STATE).read_text()) if (folder / STATE).is_file() else {}
    budget = state.get("settings", {}).get("extra", {}).get("max_util_drop")
    try:
        chosen = pick(
            front,
            max_util_drop=SEARCH["max_util_drop"] if budget is None else budget,
            max_kl=setup.max_kl,
            objectives=tuple(setup.front_objectives),
        )
    except SteerfrontError:
        return None
    return next(i for i, r in enumerate(front) if r is chosen)


def default_prompts(setup: SearchSetup) -> list[str]:
    """The concept's test prompts, each once (never the training ones)."""
    return list(dict.fromkeys(p.prompt for p in setup.splits().test))


def concept_text(setup: SearchSetup, settings: JudgeSettings) -> str:
    if settings.concept_text:
        return settings.concept_text
    name = Path(setup.concept).stem
    return CONCEPT_TEXT.get(setup.concept, name.replace("_", " "))
