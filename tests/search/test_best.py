"""The verdict on a pick: the per-pair gain over the unsteered model on the test pairs, with
the bootstrap draws of the intervals; and its one gate (`best`, `export NAME`), on hand-made
search folders (no search runs here; the tiny model only loads to export)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from steerfront.cli import main
from steerfront.lm import load_model
from steerfront.methods import init_intervention
from steerfront.methods.io import save_intervention
from steerfront.scoring.logodds import bootstrap_interval
from steerfront.search.best import assess, paired_gain, verdict
from steerfront.search.records import write_table

SEED = 0  # the seed `collapse_on_one_pair` was found with


def separate_intervals(pick, base, seed=SEED):
    """The old rule's two intervals: the pick's and the unsteered model's test preference."""
    low, high = bootstrap_interval(np.stack([pick, base], axis=1), seed)
    return (low[0], high[0]), (low[1], high[1])


def steady_rise():
    """The issue's simulation: 30 pairs, the unsteered preference spread wide, the pick a
    steady +3.5 above it on every pair (a little noise)."""
    rng = np.random.default_rng(0)
    base = rng.normal(9.0, 8.0, 30)
    return base + rng.normal(3.5, 1.9, 30), base


def collapse_on_one_pair():
    """10 pairs: the pick is well above the unsteered model on nine, and collapses on the one
    pair where the unsteered model is strongest (found by search; checked in the tests)."""
    pick = np.array([0.3, -0.2, 0.3, -0.6, 1.5, -7.3, 0.7, -1.3, 0.3, 0.1]) + 4.39
    base = np.array([0.5, -0.4, -0.2, 0.0, -1.4, 5.8, -2.2, 2.3, 0.0, 1.0])
    return pick, base


def setup_for(base_pref, base_util, seed=SEED):
    return {"seed": seed, "baseline_pref": {"test": list(base_pref)}, "baseline_util": {
        "test": list(base_util)}}  # fmt: skip


def point(pref, util, base_util, **extra):
    """A front point scored on test: its means, its paired util_drop interval, its pairs."""
    drop = np.asarray(base_util) - np.asarray(util)
    (low,), (high,) = bootstrap_interval(drop[:, None], SEED)
    return {
        "test_pref_odds": float(np.mean(pref)),
        "test_util_drop": float(drop.mean()),
        "test_util_drop_lo": float(low),
        "test_util_drop_hi": float(high),
        "test_pref_pairs": list(pref),
        "test_util_pairs": list(util),
        **extra,
    }


def test_the_gain_is_bootstrapped_with_the_intervals_draws():
    values = np.random.default_rng(1).normal(2.0, 3.0, 25)
    gain = paired_gain(list(values), [0.0] * 25, SEED)
    (low,), (high,) = bootstrap_interval(values[:, None], SEED)
    assert gain == {"mean": pytest.approx(values.mean()), "lo": low, "hi": high, "pairs": 25}
    assert paired_gain(None, [0.0], SEED) is None and paired_gain([1.0], None, SEED) is None


def test_a_steady_rise_beats_the_unsteered_model_though_the_intervals_overlap():
    pick, base = steady_rise()
    mine, theirs = separate_intervals(pick, base)
    assert mine[0] < theirs[1]  # the old rule (intervals apart) refuses it
    util = np.zeros(30)
    assessment = assess(point(pick, util, util), setup_for(base, util), max_util_drop=1.0)
    gain = assessment["gain"]
    assert gain["lo"] > 0 and gain["pairs"] == 30
    assert gain["mean"] == pytest.approx((pick - base).mean())
    assert assessment["beats_baseline"] is True and assessment["unknown"] is None
    lines = verdict(assessment).splitlines()
    assert lines[0] == (
        "verdict: beats the unsteered model on test preference: gain "
        f"+{gain['mean']:.2f} [{gain['lo']:.2f}, {gain['hi']:.2f}] over 30 pairs"
    )


def test_a_collapse_on_one_pair_does_not_beat_it_though_the_intervals_are_apart():
    pick, base = collapse_on_one_pair()
    mine, theirs = separate_intervals(pick, base)
    assert mine[0] > theirs[1]  # the old rule (intervals apart) would export it
    util = np.zeros(10)
    assessment = assess(point(pick, util, util), setup_for(base, util), max_util_drop=1.0)
    assert assessment["gain"]["lo"] <= 0 < assessment["gain"]["mean"]
    assert assessment["beats_baseline"] is False
    assert (
        verdict(assessment)
        .splitlines()[0]
        .startswith(
            "verdict: does NOT beat the unsteered model on test preference beyond the noise: gain +"
        )
    )


def test_utility_is_reported_against_the_budget_and_paired_too():
    pick, base = steady_rise()
    base_util = np.linspace(-5.0, 5.0, 30)
    util = base_util - np.linspace(0.0, 6.0, 30)  # gives up 3 on average, 0 to 6 per pair
    record = point(pick, util, base_util)
    over = assess(record, setup_for(base, base_util), max_util_drop=1.0)
    utility = over["utility"]
    assert utility["util_drop"] == pytest.approx(3.0) and utility["over_budget"] is True
    lines = verdict(over).splitlines()
    assert lines[1] == (
        f"utility: test util_drop +3.00 [{utility['lo']:.2f}, {utility['hi']:.2f}] vs budget "
        "1.00 (over budget)"
    )
    util_gain = over["util_gain"]  # the same paired interval, seen from the other side
    assert util_gain["mean"] == pytest.approx(-3.0)
    assert [util_gain["lo"], util_gain["hi"]] == pytest.approx([-utility["hi"], -utility["lo"]])
    within = assess(record, setup_for(base, base_util), max_util_drop=4.0)
    assert verdict(within).splitlines()[1].endswith("vs budget 4.00 (within budget)")


def test_unknown_verdicts_say_why():
    never = {"test_pref_odds": None, "dense": True}
    assessment = assess(never, setup_for([0.0], [0.0]), 1.0)
    assert assessment["beats_baseline"] is None
    assert verdict(assessment) == (
        "verdict: unknown (this point was never scored on test: a dense point off the extended "
        "front is scored on validation only)"
    )
    old = {"test_pref_odds": 3.0, "test_util_drop": 0.5}  # a search from before the pairs
    lines = verdict(assess(old, {"seed": 0, "baseline_util": {"test": [0.0]}}, 1.0))
    assert lines.splitlines() == [
        "verdict: unknown (this search kept no per-pair test scores; run it again to get them)",
        "utility: test util_drop +0.50 vs budget 1.00 (within budget)",
    ]


# --- the gate, on a hand-made search folder ----------------------------------------------


@pytest.fixture(scope="module")
def interventions(tmp_path_factory, tiny_model_dir):
    """A trained-intervention cache entry for the tiny model (random vector, layer 1)."""
    folder = tmp_path_factory.mktemp("cache")
    lm = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    intervention = init_intervention("vector", lm, 1)
    torch.manual_seed(0)
    intervention.params["v"].copy_(torch.randn(intervention.params["v"].shape))
    save_intervention(intervention, folder / "key1", lm)
    return folder


def make_search(tmp_path, tiny_model_dir, interventions, pick, base, max_util_drop=1.0,
                extra_points=(), pairs=True, prompted=None):  # fmt: skip
    """A finished search `h1` in `tmp_path/runs` whose front holds one point with test pairs
    `pick` (validation util_drop 0.5) and `extra_points`; the unsteered model's are `base`,
    the prompted model's `prompted` (None: a search made before the prompted baseline)."""
    import shutil

    folder = tmp_path / "runs" / "h1"
    (folder / "cache").mkdir(parents=True)
    for suffix in (".json", ".safetensors"):
        shutil.copy(interventions / f"key1{suffix}", folder / "cache" / f"key1{suffix}")
    util = np.zeros(len(base))
    first = point(pick, util, util)
    if not pairs:
        first = {k: v for k, v in first.items() if not k.endswith("_pairs")}
    rows = [
        {"trial_id": "t1", "status": "done", "form": "vector", "objective": "diffmean",
         "layer": 1.0, "m": 2.0, "pref_odds": 5.0, "util_odds": -1.0, "util_drop": 0.5,
         "train_key": "key1", "dense": False, **first},
        *extra_points,
    ]  # fmt: skip
    write_table(folder / "trials.parquet", [{**r, "dense": None} for r in rows])
    table = pa.Table.from_pylist([{**r, "front": "extended"} for r in rows])
    pq.write_table(table, folder / "front.parquet")
    baseline = {"test_pref_odds": float(np.mean(base)), "val_pref_odds": 0.0}
    state = {
        "settings": {"model": str(tiny_model_dir), "extra": {"max_util_drop": max_util_drop}},
        "setup": {
            "name": "h1", "model": str(tiny_model_dir), "concept": "sentiment", "seed": SEED,
            "baseline": baseline, "baseline_pref": {"test": list(base)},
            "baseline_util": {"test": list(util)},
        },
    }  # fmt: skip
    if prompted is not None:
        state["setup"]["prompted"] = {"val_pref_odds": 1.0, "test_pref_odds": float(np.mean(
            prompted)), "val_util_odds": -1.5, "val_kl": 0.1}  # fmt: skip
        state["setup"]["prompted_pref"] = {"test": list(prompted)}
    (folder / "search.json").write_text(json.dumps(state))
    return str(tmp_path / "runs"), folder


def test_best_exports_on_the_paired_gain_and_its_json(
    tmp_path, tiny_model_dir, interventions, capsys
):
    runs, folder = make_search(tmp_path, tiny_model_dir, interventions, *steady_rise())
    assert main(["best", "h1", "--storage", runs, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    gain = document["gain"]
    assert set(gain) == {"mean", "lo", "hi", "pairs"} and gain["pairs"] == 30
    assert document["beats_baseline"] is True and gain["lo"] > 0
    assert set(document["util_gain"]) == {"mean", "lo", "hi", "pairs"}
    assert document["utility"]["budget"] == 1.0 and document["utility"]["over_budget"] is False
    assert "test_pref_pairs" not in document["best"]
    assert document["exported"] == str(folder / "best-max-pref")
    saved = (folder / "best-max-pref" / "best.yaml").read_text()
    assert "beats_baseline: true" in saved and "test_pref_pairs" not in saved


def test_best_and_export_refuse_a_pick_that_does_not_beat_it(
    tmp_path, tiny_model_dir, interventions, capsys
):
    runs, folder = make_search(tmp_path, tiny_model_dir, interventions, *collapse_on_one_pair())
    assert main(["best", "h1", "--storage", runs]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("verdict: does NOT beat the unsteered model on test preference")
    assert lines[1].endswith("over 10 pairs")
    assert lines[2].startswith("utility: test util_drop +0.00")
    assert lines[3] == "nothing exported (pass --force to export it anyway)"
    assert not (folder / "best-max-pref").exists()
    assert main(["export", "h1", "--storage", runs, "--to", "gguf"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("point: vector diffmean layer 1 m 2")
    assert out[1] == lines[1] and out[-1] == "nothing exported (pass --force to export it anyway)"
    assert not (folder / "export-gguf").exists()
    assert main(["export", "h1", "--storage", runs, "--to", "gguf", "--point", "1"]) == 1
    capsys.readouterr()
    assert main(["export", "h1", "--storage", runs, "--to", "gguf", "--force"]) == 0
    assert (folder / "export-gguf" / "control_vector.gguf").is_file()


def test_export_of_a_search_picks_with_its_own_budget(
    tmp_path, tiny_model_dir, interventions, capsys
):
    """The search kept --max-util-drop 2: `best` and `export NAME` pick within it, not 1."""
    pick, base = steady_rise()
    bolder = {**point(pick + 5, np.zeros(30), np.zeros(30)), "trial_id": "t2", "status": "done",
              "form": "vector", "objective": "diffmean", "layer": 1.0, "m": 3.0,
              "pref_odds": 6.0, "util_odds": -2.0, "util_drop": 1.5, "train_key": "key1",
              "dense": False}  # fmt: skip
    runs, folder = make_search(tmp_path, tiny_model_dir, interventions, pick, base,
                               max_util_drop=2.0, extra_points=[bolder])  # fmt: skip
    assert main(["export", "h1", "--storage", runs, "--to", "gguf"]) == 0
    assert capsys.readouterr().out.startswith("point: vector diffmean layer 1 m 3,")
    assert main(["best", "h1", "--storage", runs, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["best"]["m"] == 3.0 and document["utility"]["budget"] == 2.0
    assert main(["best", "h1", "--storage", runs, "--json", "--max-util-drop", "1",
                 "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["best"]["m"] == 2.0


def test_a_search_without_per_pair_scores_has_no_verdict_and_no_export(
    tmp_path, tiny_model_dir, interventions, capsys
):
    runs, folder = make_search(tmp_path, tiny_model_dir, interventions, *steady_rise(),
                               pairs=False)  # fmt: skip
    assert main(["best", "h1", "--storage", runs]) == 1
    out = capsys.readouterr().out
    assert "verdict: unknown (this search kept no per-pair test scores" in out
    assert not (folder / "best-max-pref").exists()


def test_a_judged_point_never_scored_on_test_says_so(
    tmp_path, tiny_model_dir, interventions, capsys
):
    """`--points` can judge a dense point off the front: it has validation scores only."""
    runs, folder = make_search(tmp_path, tiny_model_dir, interventions, *steady_rise())
    (folder / "judge").mkdir()
    judged = [
        {"point": 0, "m": 0.0, "concept": 0.1, "fluency": 1.0},
        {"point": 1, "trial_id": "t1", "form": "vector", "objective": "diffmean",
         "layer": 1, "m": 2.5, "pref_odds": 5.5, "util_odds": -1.5, "train_key": "key1",
         "dense": True, "test_pref_odds": None, "concept": 0.9, "fluency": 0.9},
    ]  # fmt: skip
    columns = list(dict.fromkeys(k for r in judged for k in r))
    table = pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in judged])
    pq.write_table(table, folder / "judge" / "judged.parquet")
    # without a kl budget: under one, a point whose kl is unknown is never the judged pick
    assert main(["best", "h1", "--storage", runs, "--rule", "judged", "--max-kl", "inf"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "verdict: unknown (this point was never scored on test: a dense point off the extended "
        "front is scored on validation only)"
    )
    assert "kept no intervals" not in "\n".join(lines)


def test_a_search_writes_best_only_while_its_pick_beats_the_unsteered_model(
    tmp_path, tiny_model_dir, interventions, monkeypatch
):
    """The search's own `best/`: written when the verdict holds; an earlier one (before a
    resume) removed when the new pick's does not. The worker's part runs in this process."""
    import shutil

    from steerfront.search import report
    from steerfront.search.trial import SearchSetup

    class Tracker:
        uri, parent_run_id = "none", "none"

        def log_artifact(self, *args):
            pass

        def finish(self):
            pass

    monkeypatch.setattr(
        report,
        "in_workers",
        lambda work, resources, items, workers, *args, sizes: [work(i, *args) for i in items],
    )
    folder = tmp_path / "runs" / "h1"
    (folder / "cache").mkdir(parents=True)
    for suffix in (".json", ".safetensors"):
        shutil.copy(interventions / f"key1{suffix}", folder / "cache" / f"key1{suffix}")
    for (pick, base), beats in ((steady_rise(), True), (collapse_on_one_pair(), False)):
        util = np.zeros(len(base))
        setup = SearchSetup(
            model=str(tiny_model_dir), concept="sentiment", fmt=None, val_fraction=0.2,
            test_fraction=0.2, seed=SEED, storage=str(tmp_path / "runs"), name="h1",
            baseline={"val_pref_odds": 0.0, "val_util_odds": 0.0}, dtype="float32",
            baseline_util={"test": list(util)}, baseline_pref={"test": list(base)},
        )  # fmt: skip
        record = {"trial_id": "t1", "status": "done", "form": "vector", "objective": "diffmean",
                  "layer": 1.0, "m": 2.0, "pref_odds": 5.0, "util_odds": -0.5,
                  "util_drop": 0.5, "train_key": "key1", "dense_points": [],
                  **point(pick, util, util)}  # fmt: skip
        (settled,) = report.settle_searches([([record], setup, 1.0)], {"cpu": 1, "gpu": 0})
        summary = report.write_results(
            folder, [record], setup, Tracker(), 1.0, (0.0, -5.0), settled
        )
        assert summary["beats_baseline"] is beats
        assert summary["gain"]["pairs"] == len(base)
        assert (folder / "best" / "best.yaml").is_file() is beats
        assert summary["exported"] == (str(folder / "best") if beats else None)


def test_the_verdict_says_whether_the_pick_beats_prompting_too():
    pick, base = steady_rise()
    setup = setup_for(base, np.zeros(30))
    record = point(pick, np.zeros(30), np.zeros(30))
    for prompted, words in ((base + 1.0, "beats prompting too"),
                            (pick + 0.5, "does not beat prompting")):  # fmt: skip
        assessment = assess(record, {**setup, "prompted_pref": {"test": list(prompted)}}, 1.0)
        gain = paired_gain(pick, prompted, SEED)
        assert assessment["prompted_gain"] == gain
        assert assessment["beats_prompted"] is (gain["lo"] > 0)
        first = verdict(assessment).splitlines()[0]
        assert first.startswith("verdict: beats the unsteered model on test preference")
        assert first.endswith(
            f"; {words}: gain {gain['mean']:+.2f} [{gain['lo']:.2f}, {gain['hi']:.2f}]"
        )
    assert assessment["prompted_gain"]["mean"] == pytest.approx(-0.5)
    before = assess(record, setup, 1.0)  # a search made before the prompted baseline
    assert before["prompted_gain"] is None and before["beats_prompted"] is None
    assert "prompting" not in verdict(before)


def test_best_front_and_export_with_and_without_the_prompted_baseline(
    tmp_path, tiny_model_dir, interventions, capsys
):
    pick, base = steady_rise()
    for name, prompted in (("old", None), ("new", pick + 1.0)):
        runs, folder = make_search(tmp_path / name, tiny_model_dir, interventions, pick, base,
                                   prompted=prompted)  # fmt: skip
        assert main(["front", "h1", "--storage", runs, "--json"]) == 0
        baselines = json.loads(capsys.readouterr().out)["baselines"]
        assert main(["front", "h1", "--storage", runs]) == 0
        rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
        assert main(["best", "h1", "--storage", runs, "--json"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["baselines"] == baselines
        assert main(["best", "h1", "--storage", runs, "--out", str(tmp_path / name / "b")]) == 0
        lines = capsys.readouterr().out.splitlines()
        out = tmp_path / name / "gguf"
        assert main(["export", "h1", "--storage", runs, "--to", "gguf", "--out", str(out)]) == 0
        capsys.readouterr()
        if prompted is None:
            assert baselines == {"unsteered": document["baseline"], "prompted": None}
            assert rows == ["unsteered", "1"] and "prompting" not in lines[1]
            assert document["beats_prompted"] is None
        else:
            assert baselines["prompted"]["val_kl"] == 0.1
            assert baselines["prompted"]["instruction"].startswith("Answer with a clearly positive")
            assert rows == ["unsteered", "prompted", "1"]
            assert document["beats_prompted"] is False and "does not beat prompting" in lines[1]
            assert document["prompted_gain"]["mean"] == pytest.approx(-1.0)
