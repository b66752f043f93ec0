"""Which points a judge pass judges and what they answer: the unsteered model, then the chosen
points or K spread along the extended front; the concept's test prompts; the concept in words."""

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

POINT_FIELDS = ("point", "trial_id", "form", "objective", "layer", "m", "rank", "gamma")


def select_points(folder: Path, setup: SearchSetup, settings: JudgeSettings) -> list[dict]:
    """The unsteered model (point 0), then the chosen points or up to K points spread evenly
    along the extended front (its ends included), by pref_odds."""
    baseline = setup.baseline
    unsteered = {
        "point": 0,
        "m": 0.0,
        "pref_odds": baseline["val_pref_odds"],
        "util_odds": baseline["val_util_odds"],
        "kl": 0.0,  # the unsteered model's kl from itself
        "test_pref_odds": baseline.get("test_pref_odds"),
        "test_util_odds": baseline.get("test_util_odds"),
    }
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
        front = read_front(folder, extended=True)
        index = np.round(np.linspace(0, len(front) - 1, settings.points)).astype(int)
        chosen = _searched_pick(folder, setup, front)
        if chosen is not None:  # the search's own pick is always judged
            index = np.append(index, chosen)
        picked = [front[i] for i in np.unique(index)] if front else []
    return [unsteered, *({**r, "point": i + 1} for i, r in enumerate(picked))]


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
