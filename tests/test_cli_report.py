"""The printers the commands share (`steerfront.cli.report`)."""

from steerfront.cli.report import cell, describe, interval, print_front, print_judged
from steerfront.search.judged import judge_warnings

POINT = {"point": 1, "form": "vector", "objective": "diffmean", "layer": 1, "m": 4.0}


def summary(accuracy):
    rows = [
        {**POINT, "point": 0, "pref_odds": 1.0, "util_odds": -2.0, "concept": 0.5},
        {**POINT, "pref_odds": 3.0, "util_odds": -2.5, "concept": 0.9},
    ]
    return {
        "judged": rows,
        "probe_accuracy": accuracy,
        "judge_warnings": judge_warnings(accuracy),
        "unparsed": 0,
        "agreement": {
            "pref_concept": {"rho": 0.5, "lo": -0.1, "hi": 0.9, "points": 12},
            "util_fluency": {"rho": None, "lo": None, "hi": None, "points": 5},
        },
        "examples": {"picked": None, "rule": None, "rows": []},
        "judge_folder": "runs/s/judge",
    }


def test_a_weak_probe_is_warned_of_on_stderr_and_in_the_summary(capsys):
    assert judge_warnings(None) == [] and judge_warnings(0.8) == []
    weak = summary(0.75)
    assert weak["judge_warnings"] == [
        "the concept probe is below 0.8 accuracy on held-out generations (for prompts not used "
        "to fit it): read its concept scores with care"
    ]
    print_judged(weak)
    out, err = capsys.readouterr()
    assert "concept probe: held-out accuracy 0.75" in out
    assert "pref_odds vs concept +0.50 [-0.10, +0.90], not enough evidence" in out
    assert "util_odds vs fluency not enough evidence (5 points; 8 needed)" in out
    assert err == f"steerfront: warning: {weak['judge_warnings'][0]}\n"
    print_judged(summary(0.9))
    assert capsys.readouterr().err == ""


def test_cells_and_a_point_in_one_line():
    assert cell(None) == "-" and cell(float("nan")) == "-" and cell(2.0) == "2"
    assert interval({"x": 1.0, "x_lo": 0.5, "x_hi": 1.5}, "x") == "1.000 [0.50,1.50]"
    record = {**POINT, "pref_odds": 3.0, "util_odds": -2.5}
    assert describe(record) == (
        "vector diffmean layer 1 m 4, pref_odds 3.000 util_odds -2.500 (test - / -)"
    )


def test_the_judged_pick_is_printed_with_its_verdict(capsys):
    judged = summary(0.9)
    gain = {"mean": 3.54, "lo": 2.87, "hi": 4.21, "pairs": 30}
    judged["examples"] = {"picked": judged["judged"][1], "rule": "judged", "rows": []}
    judged["verdict"] = {"beats_baseline": True, "gain": gain, "util_gain": None, "utility": None}
    print_judged(judged)
    out = capsys.readouterr().out
    assert "picked (best --rule judged): point 1, vector diffmean layer 1 m 4\n" in out
    assert (
        "verdict: beats the unsteered model on test preference: gain +3.54 [2.87, 4.21] over "
        "30 pairs\n"
    ) in out


def test_the_judged_table_shows_the_prompted_row(capsys):
    judged = summary(0.9)
    prompted = {**POINT, "point": -1, "form": None, "objective": None, "layer": None, "m": 0.0}
    judged["judged"].insert(1, {**prompted, "pref_odds": 2.0, "util_odds": -3.0, "concept": 0.7})
    print_judged(judged)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["unsteered", "prompted", "1"]
    assert lines[2].split()[-1] == "0.700"  # its concept score


BASELINE = {"val_pref_odds": 1.0, "val_pref_odds_lo": 0.5, "val_pref_odds_hi": 1.5,
            "val_util_odds": -2.0, "val_kl": 0.0, "test_pref_odds": 0.9}  # fmt: skip
PROMPTED = {"val_pref_odds": 2.5, "val_pref_odds_lo": 2.0, "val_pref_odds_hi": 3.0,
            "val_util_odds": -2.4, "val_util_drop": 0.4, "val_kl": 0.12, "val_kl_lo": 0.1,
            "val_kl_hi": 0.15, "test_pref_odds": 2.2}  # fmt: skip


def test_the_front_table_shows_both_baselines_and_numbers_the_points_from_1(capsys):
    row = {**POINT, "pref_odds": 3.0, "util_odds": -2.5, "util_drop": 0.5, "kl": 0.2}
    print_front([row, {**row, "dense": True}], {"unsteered": BASELINE, "prompted": PROMPTED})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [
        ["unsteered", "-"], ["prompted", "-"], ["1", "trial"], ["2", "dense"]
    ]  # fmt: skip
    assert "1.000 [0.50,1.50]" in lines[1] and lines[1].split()[-1] == "0"  # kl 0
    assert "2.500 [2.00,3.00]" in lines[2] and "0.120 [0.10,0.15]" in lines[2]
    assert "0.400" in lines[2] and "2.200" in lines[2]  # its util_drop and test preference
    print_front([row], {"unsteered": BASELINE, "prompted": None})  # a search made before it
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["unsteered", "1"]
