"""The printers the commands share (`steerfront.cli.report`)."""

from steerfront.cli.report import cell, describe, interval, print_judged
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
