"""Agreement of log-odds with a judge and the points it is measured over, on known answers."""

import numpy as np
import pytest

from steerfront.search.judge_points import spread
from steerfront.search.judge_results import AGREEMENT_MIN_POINTS, agree, agreement_text


def records(pref: list[float], concept: list[float]) -> list[dict]:
    return [
        {"pref_odds": p, "concept": c, "util_odds": -i, "fluency": None}
        for i, (p, c) in enumerate(zip(pref, concept, strict=True))
    ]


def test_ranks_in_the_same_order_agree_fully_and_reversed_disagree_fully():
    pref = list(range(12))
    same = agree(records(pref, [p**3 for p in pref]))["pref_concept"]
    assert same["points"] == 12
    assert [same["rho"], same["lo"], same["hi"]] == pytest.approx([1, 1, 1])
    reversed_ = agree(records(pref, [-p for p in pref]))["pref_concept"]
    assert reversed_["rho"] == pytest.approx(-1) and reversed_["hi"] == pytest.approx(-1)
    assert "not enough evidence" not in agreement_text(same)


def test_no_coefficient_below_the_minimum_or_without_the_score():
    few = agree(records(list(range(7)), list(range(7))))
    assert few["pref_concept"] == {"rho": None, "lo": None, "hi": None, "points": 7}
    assert few["util_fluency"]["points"] == 0 and few["util_fluency"]["rho"] is None
    assert "not enough evidence" in agreement_text(few["pref_concept"])
    assert AGREEMENT_MIN_POINTS == 8


def test_unrelated_ranks_are_not_enough_evidence():
    rng = np.random.default_rng(1)
    entry = agree(records(list(rng.normal(size=10)), list(rng.normal(size=10))))["pref_concept"]
    assert entry["lo"] <= entry["rho"] <= entry["hi"] and entry["lo"] < 0 < entry["hi"]
    assert agreement_text(entry).endswith("not enough evidence")


def test_points_span_the_front_and_each_form_off_it_over_m():
    front = [{"trial_id": f"f{i}", "m": float(i), "form": "vector"} for i in range(5)]
    off = [
        {"trial_id": f"{form}{i}", "m": float(i), "form": form, "objective": "sft"}
        for form in ("lora", "vector")
        for i in range(11)  # m = 0 is the unsteered model again: never taken
    ]
    chosen = spread(front, off, 12)
    assert len(chosen) == 12
    assert [r["trial_id"] for r in chosen[:5]] == [f"f{i}" for i in range(5)]  # all 5 on it
    rest = chosen[5:]
    assert {r["form"] for r in rest} == {"lora", "vector"}
    for form in ("lora", "vector"):
        ms = [r["m"] for r in rest if r["form"] == form]
        assert min(ms) == 1 and max(ms) == 10  # both ends of m
    assert len(spread(front, off[1:4], 12)) == 8  # fewer off the front: all there are
    assert len(spread(front * 4, [], 12)) == 12
