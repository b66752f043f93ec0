"""kl in the search (#27): the front's objectives, the kl constraint, kl columns everywhere."""

import contextlib
import io
import json
import math

import pyarrow.parquet as pq
import pytest
import yaml

from steerfront.cli import main
from steerfront.errors import SteerfrontError
from steerfront.search import axes
from steerfront.search.best import front, front_volume, pick, pick_judged, read_trials
from steerfront.search.samplers import ConstrainedOptunaSearch


def row(pref, util, kl, drop=0.0, **extra):
    return {"pref_odds": pref, "util_odds": util, "kl": kl, "util_drop": drop, **extra}


def test_objectives_and_max_kl_are_checked():
    assert axes.parse_objectives("pref_odds,kl") == ("pref_odds", "kl")
    for bad, message in [
        ("pref_odds", "name two different objectives"),
        ("foo,kl", "unknown objective 'foo'"),
        ("kl,kl", "name two different objectives"),
        ("pref_odds,util_odds,kl", "name two different objectives"),
    ]:
        with pytest.raises(SteerfrontError, match=message):
            axes.parse_objectives(bad)
    for bad in (-1.0, 0.0, math.nan):
        with pytest.raises(SteerfrontError, match="--max-kl must be above 0"):
            axes.check_max_kl(bad)
    assert axes.check_max_kl(math.inf) == math.inf


def test_an_infeasible_point_is_never_on_the_front_nor_picked():
    rows = [row(3.0, -1.0, 0.9), row(2.0, -1.0, 0.1), row(1.0, -0.5, 0.05)]
    assert rows[0] in front(rows, max_kl=math.inf)  # no constraint: the highest pref stands
    assert front(rows) == [rows[2]]  # the default budget, 0.05 nats
    kept = front(rows, max_kl=0.5)
    assert rows[0] not in kept and rows[1] in kept and rows[2] in kept
    assert pick(rows, max_kl=math.inf) is rows[0]
    assert pick(rows, max_kl=0.5) is rows[1]
    assert pick(rows, rule="knee", max_kl=0.5) in (rows[1], rows[2])
    with pytest.raises(SteerfrontError, match="no front configuration keeps kl <= 0.01"):
        pick(rows, max_kl=0.01)


def test_a_front_on_preference_and_kl():
    rows = [row(3.0, -5.0, 0.9), row(2.0, 0.0, 0.1), row(1.0, 0.0, 0.3), row(0.5, 0.0, 0.01)]
    on = front(rows, ("pref_odds", "kl"), math.inf)
    assert rows[2] not in on  # less preference and more kl than rows[1]
    assert {id(r) for r in on} == {id(rows[0]), id(rows[1]), id(rows[3])}
    reference = axes.reference({"val_pref_odds": 0.0}, 5.0, ("pref_odds", "kl"), 1.0)
    assert reference == (0.0, -1.0)
    done = [{**r, "dense_points": []} for r in rows]
    volume = front_volume(done, reference, False, ("pref_odds", "kl"), math.inf)
    # strips by preference: [0, 0.5] up to 0.99, [0.5, 2] up to 0.9, [2, 3] up to 0.1
    assert volume == pytest.approx(0.5 * 0.99 + 1.5 * 0.9 + 1.0 * 0.1)


def test_the_searcher_tells_optuna_the_kl_constraint():
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    search = ConstrainedOptunaSearch(space, metric=["pref_odds", "kl"], mode=["max", "min"],
                                     max_kl=0.5)  # fmt: skip
    assert isinstance(search, OptunaSearch)
    for trial_id, kl in (("a", 0.9), ("b", 0.1)):
        search.suggest(trial_id)
        search.on_trial_complete(trial_id, {"pref_odds": 1.0, "kl": kl})
    trials = search._ot_study.get_trials()
    assert [t.constraints for t in trials] == [{"kl": pytest.approx(0.4)}, {"kl": -0.4}]


def search(tmp_path, model_dir, *flags):
    out = io.StringIO()
    argv = ["search", "--model", str(model_dir), "--storage", str(tmp_path / "runs"), "--json"]
    with contextlib.redirect_stdout(out):
        status = main([*argv, "-q", *flags])
    return status, out.getvalue()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--front-objectives", "pref_odds"], "--front-objectives: name two different"),
        (["--front-objectives", "foo,kl"], "--front-objectives: unknown objective 'foo'"),
        (["--max-kl", "-1"], "--max-kl must be above 0 nats, not -1"),
        (["--neutral-prompts", "nope.txt"], "nope.txt: no such file (neutral prompts)"),
    ],
)
def test_bad_kl_flags(tmp_path, tiny_model_dir, capsys, flags, message):
    status, _ = search(tmp_path, tiny_model_dir, *flags)
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def constrained(tmp_path_factory, tiny_model_dir):
    """A 4-trial search on (pref_odds, kl) with a kl budget some trials exceed (in nats: the
    tiny model moves little)."""
    tmp_path = tmp_path_factory.mktemp("kl-search")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"forms": ["vector"], "objectives": ["diffmean"],
                                     "layers": [1], "m": [0.0, 3.0]}))  # fmt: skip
    prompts = tmp_path / "neutral.txt"
    prompts.write_text("Name a colour.\nCount to three.\nSay hello.\n")
    status, out = search(
        tmp_path, tiny_model_dir, "--space", str(space), "--trials", "4", "--name", "k1",
        "--concurrency", "1", "--dense-m", "3", "--front-objectives", "pref_odds,kl",
        "--max-kl", "7e-6", "--neutral-prompts", str(prompts), "--dtype", "float32",
    )  # fmt: skip
    assert status == 0
    return tmp_path, json.loads(out.strip().splitlines()[-1])


def test_kl_columns_and_infeasible_trials_kept_off_the_front(constrained):
    tmp_path, summary = constrained
    folder = tmp_path / "runs" / "k1"
    trials = [r for r in read_trials(folder) if r["status"] == "done"]
    assert len(trials) == 4
    for r in trials:
        assert r["kl"] is not None and r["kl_lo"] <= r["kl"] <= r["kl_hi"]
        assert r["kl_first"] is not None
        assert r["feasible"] == (r["kl"] <= 7e-6)
        for point in r["dense_points"]:  # kl decides the front: dense points have theirs
            assert point["kl"] is not None
    infeasible = [r for r in trials if not r["feasible"]]
    assert infeasible, [(r["m"], r["kl"]) for r in trials]
    assert summary["infeasible"] == len(infeasible)
    table = pq.read_table(folder / "front.parquet").to_pylist()
    assert "kl" in pq.read_table(folder / "front.parquet").schema.names
    assert all(r["kl"] <= 7e-6 for r in table)
    ids = {r["trial_id"] for r in infeasible}
    assert not any(r["trial_id"] in ids and not r["dense"] for r in table)
    assert summary["front_objectives"] == ["pref_odds", "kl"] and summary["max_kl"] == 7e-6
    assert summary["baseline"]["val_kl"] == 0.0
    assert all("kl" in r for r in summary["extended_front"])
    state = json.loads((folder / "search.json").read_text())
    assert state["setup"]["neutral_prompts"].endswith("neutral.txt")


def test_best_honours_max_kl(constrained, capsys):
    tmp_path, _ = constrained
    storage = str(tmp_path / "runs")
    front_rows = [r for r in pq.read_table(tmp_path / "runs" / "k1" / "front.parquet")
                  .to_pylist() if r["front"] == "extended"]  # fmt: skip
    allowed = [r for r in front_rows if r["kl"] <= 1e-12]
    status = main(["best", "k1", "--storage", storage, "--json", "--max-kl", "1e-12",
                   "--max-util-drop", "100"])  # fmt: skip
    out, err = capsys.readouterr()
    if allowed:
        assert json.loads(out)["best"]["kl"] <= 1e-12
    else:
        assert status == 2 and "no front configuration keeps kl <= 1e-12" in err
    status = main(["best", "k1", "--storage", storage, "--json", "--max-kl", "-1"])
    assert status == 2 and "--max-kl must be above 0" in capsys.readouterr().err


def test_settling_scores_kl_only_where_a_dense_point_reaches_the_front(monkeypatch):
    """With kl a constraint, not an objective, a dense point's kl is scored once it reaches the
    front; one above --max-kl leaves it and uncovers the point it dominated."""
    from types import SimpleNamespace

    from steerfront.search import worker

    true_kl = {"B": 0.9, "C": 0.2, "D": 0.0}
    rows = [
        row(3.0, -1.0, 0.1, name="A", dense=False),
        row(5.0, -1.0, None, name="B", dense=True),  # dominates every other point
        row(4.0, -1.5, None, name="C", dense=True),
        row(1.0, -2.0, None, name="D", dense=True),  # dominated throughout: never scored
    ]
    calls = []

    def score_kl(todo, setup, lm, cache):
        calls.append([r["name"] for r in todo])
        for r in todo:
            r["kl"] = true_kl[r["name"]]

    monkeypatch.setattr(worker, "score_kl", score_kl)
    setup = SimpleNamespace(axes=(("pref_odds", "util_odds"), 0.5))
    settled = worker.settle(rows, setup, lm=None, cache=None)
    assert calls == [["B"], ["C"]]
    assert sorted(r["name"] for r in settled) == ["A", "C"]
    assert rows[3]["kl"] is None


def test_the_judged_rule_takes_only_points_whose_kl_is_known_within_budget():
    """Off the front a judged point has no kl; fluency alone lets broken text through, so the
    judged rule leaves such a point out under a budget (and takes it without one)."""
    judged = [
        {"point": 0, "concept": 0.1, "fluency": 0.9, "kl": 0.0},
        {"point": -1, "concept": 0.99, "fluency": 0.9, "kl": 0.2},  # prompted: never a candidate
        {"point": 1, "concept": 0.3, "fluency": 0.9, "kl": 0.01},
        {"point": 2, "concept": 0.98, "fluency": 0.8, "kl": None},  # "Yesnonoinnoin..."
        {"point": 3, "concept": 0.9, "fluency": 0.9, "kl": 0.3},
    ]
    assert pick_judged(judged, max_kl=0.05)["point"] == 1
    assert pick_judged(judged, max_kl=math.inf)["point"] == 2
    with pytest.raises(SteerfrontError, match="with a known kl within 0.001"):
        pick_judged(judged[:1] + judged[3:], max_kl=0.001)
