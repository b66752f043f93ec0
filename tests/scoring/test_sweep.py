import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from steerfront.cli import main
from steerfront.data import PairSet, load_concept
from steerfront.errors import SteerfrontError
from steerfront.methods import FORMS, Objective, TrainSpec
from steerfront.scoring import report, sweep
from steerfront.scoring.fit import FREE_PARAMETERS
from steerfront.scoring.sweep import default_grid, fit_problem, run_sweep, sweep_grid

PAIRS = PairSet("few", load_concept("agreeableness").pairs[:20])
# 17 distinct m: enough for both fits (at least twice their free parameters).
GRID = [-4.0, -3.0, -2.0, -1.5, -1.0, -0.6, -0.3, -0.1, 0.0, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0, 3.0, 4.0]


def test_default_grid_is_symmetric_and_denser_near_zero():
    grid = default_grid(TrainSpec(form="lora", layer=1))
    assert grid == sorted(grid) and 0.0 in grid
    assert np.allclose(grid, [-x for x in reversed(grid)])
    steps = np.diff(grid[len(grid) // 2 :])
    assert steps[0] < steps[-1]
    assert default_grid(TrainSpec(form="vector", layer=1))[-1] > grid[-1]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("objective", ["split", "diffmean"])
def test_default_grid_is_enough_for_both_fits(form, objective):
    if objective == "diffmean" and form != "vector":
        pytest.skip("diffmean only produces vectors")
    grid = default_grid(TrainSpec(form=form, layer=1, objective=Objective(objective)))
    assert len(set(grid)) >= 2 * max(FREE_PARAMETERS.values()) == 16
    assert fit_problem(sweep_grid(grid)) is None


def test_sweep_grid_is_sorted_without_repeats():
    assert sweep_grid([2.0, -1.0, 0.0, 2.0, -1.0]).tolist() == [-1.0, 0.0, 2.0]
    with pytest.raises(SteerfrontError, match="at least 2 distinct values of m, got 1"):
        sweep_grid([3.0, 3.0])


def _no_training(*args, **kwargs):
    raise AssertionError("trained before refusing the grid")


@pytest.mark.parametrize(
    "grid,message",
    [
        (GRID[:8], "none with m > 0"),
        ([abs(m) for m in GRID], "none with m < 0"),
        ([-4.0, -1.0, -0.3, 0.0, 0.3, 1.0, 4.0], "7 distinct m, but the pref fit has 8 free"),
        (GRID[2:], "^m-grid: 15 distinct m, .* needs at least 16 distinct m$"),
    ],
)
def test_run_sweep_refuses_a_grid_the_fits_cannot_use_before_training(monkeypatch, grid, message):
    monkeypatch.setattr(sweep, "fit", _no_training)
    splits = PAIRS.split(0.0, 0.25, seed=0)
    with pytest.raises(SteerfrontError, match=message) as err:
        run_sweep(None, splits, TrainSpec(form="vector", layer=1), grid)
    assert "\n" not in str(err.value)


def test_sweep_scores_train_and_test_at_every_m(tiny_lm):
    splits = PAIRS.split(0.0, 0.25, seed=0)
    spec = TrainSpec(form="vector", layer=1, batch_size=4, steps=6)
    result = run_sweep(tiny_lm, splits, spec, GRID)
    pairs = result["pairs"]
    assert pairs.num_rows == len(PAIRS) * len(GRID)
    assert set(pairs.column("split").to_pylist()) == {"train", "test"}
    summary = result["summary"].to_pylist()
    assert [row["m"] for row in summary] == GRID
    assert {row["dtype"] for row in summary} == {"float32"}  # tiny_lm's, recorded per row
    for key in ("train_pref_odds", "test_util_odds", "off_manifold", "knn_distance", "projection"):
        assert all(np.isfinite(row[key]) for row in summary), key
    # The manifold's distance is smallest where nothing is steered.
    off = [row["off_manifold"] for row in summary]
    assert np.argmin(off) == GRID.index(0.0)
    kl = [row["kl"] for row in summary]  # kl from the unsteered model: 0 at m = 0 exactly
    assert kl[GRID.index(0.0)] == 0.0
    assert all(v > 0 for m, v in zip(GRID, kl, strict=True) if m != 0.0)
    assert set(result["fits"]) == {"pref", "util"}
    assert 1 <= result["manifold"]["k"] <= tiny_lm.hidden_size
    assert result["manifold"]["points"] == len(splits.test) == 5
    assert result["manifold"]["reliable"] is False  # 5 test prompts are too few for a finding


@pytest.mark.parametrize("tiny_lm", ["llama"], indirect=True)
def test_grid_order_and_duplicates_do_not_change_the_results(tiny_lm):
    """Each m's scores, manifold measures and fitted curve belong to that m, whatever the order."""
    splits = PAIRS.split(0.0, 0.25, seed=0)
    spec = TrainSpec(form="vector", layer=1, batch_size=4, steps=6)
    shuffled = [GRID[i] for i in np.random.default_rng(0).permutation(len(GRID))]
    runs = [run_sweep(tiny_lm, splits, spec, grid) for grid in (GRID, shuffled + GRID[:3])]
    sorted_rows, shuffled_rows = (run["summary"].to_pylist() for run in runs)
    assert [row["m"] for row in shuffled_rows] == GRID
    for expected, got in zip(sorted_rows, shuffled_rows, strict=True):
        numbers = {k for k, v in expected.items() if isinstance(v, float)}
        assert {k: got[k] for k in numbers} == pytest.approx(
            {k: expected[k] for k in numbers}, rel=1e-5, abs=1e-6
        )
        assert {k: got[k] for k in got.keys() - numbers} == {
            k: expected[k] for k in expected.keys() - numbers
        }
    assert runs[1]["manifold"] == pytest.approx(runs[0]["manifold"], rel=1e-5)
    assert runs[1]["pairs"].num_rows == runs[0]["pairs"].num_rows == len(PAIRS) * len(GRID)
    for kind in ("pref", "util"):
        expected, got = runs[0]["fits"][kind].numbers(), runs[1]["fits"][kind].numbers()
        assert got["params"] == pytest.approx(expected["params"], rel=1e-3, abs=1e-6)
        for r2 in ("r2_train", "r2_test", "r2_transfer"):
            assert got[r2] == pytest.approx(expected[r2], abs=1e-4), (kind, r2)


def test_cli_sweep_writes_everything(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "sweep"
    status = main(
        [
            "sweep",
            "--model",
            str(tiny_model_dir),
            "--layer",
            "1",
            "--m=" + ",".join(map(str, GRID)),
            "--batch-size",
            "4",
            "--factors",
            "2,4",
            "--steps",
            "6",
            "--out",
            str(out),
            "--json",
            "-q",
            "--dtype",
            "bfloat16",
        ]
    )
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == str(out) and result["dtype"] == "bfloat16"
    assert set(pq.read_table(out / "summary.parquet").column("dtype").to_pylist()) == {"bfloat16"}
    names = sorted(path.name for path in out.iterdir())
    assert names == [
        "fits.json",
        "intervention.json",
        "intervention.safetensors",
        "manifold.json",
        "manifold.png",
        "pairs.parquet",
        "summary.parquet",
        "sweep.png",
    ]
    assert pq.read_table(out / "summary.parquet").num_rows == len(GRID)
    fits = json.loads((out / "fits.json").read_text())
    assert set(fits) == {"pref", "util"} and fits == result["fits"]
    assert json.loads((out / "manifold.json").read_text()) == result["manifold"]


def test_cli_sweep_without_fits_writes_the_rest(tmp_path, tiny_model_dir, capsys):
    """--no-fit takes a grid too small to fit, and says the fits were skipped; a manifold from
    7 test prompts is reported as unreliable, not as a finding."""
    out = tmp_path / "sweep"
    argv = ["sweep", "--model", str(tiny_model_dir), "--layer", "1", "--m=2,-1,0,2"]
    argv += ["--test-fraction", "0.05", "--no-fit", "--factors", "2,4", "--steps", "6"]
    status = main([*argv, "--out", str(out), "-q"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "fits skipped (--no-fit)" in printed and "R²" not in printed
    assert "\nmanifold: unreliable (7 points for k = " in printed and "explain" not in printed
    assert json.loads((out / "manifold.json").read_text())["reliable"] is False
    names = sorted(path.name for path in out.iterdir())
    assert "fits.json" not in names
    assert {"manifold.json", "summary.parquet", "sweep.png", "manifold.png"} <= set(names)
    assert pq.read_table(out / "summary.parquet").column("m").to_pylist() == [-1.0, 0.0, 2.0]


def test_cli_sweep_per_token_scores_and_records_the_scale(tmp_path, tiny_model_dir, capsys):
    from steerfront.data import encode_pairs
    from steerfront.lm import load_model
    from steerfront.methods.io import load_intervention
    from steerfront.scoring.evaluate import evaluate

    out = tmp_path / "sweep"
    argv = ["sweep", "--model", str(tiny_model_dir), "--layer", "1", "--m=-1,0,2", "--no-fit"]
    argv += ["--factors", "2,4", "--steps", "6", "--out", str(out), "-q", "--json"]
    assert main([*argv, "--per-token"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["per_token"] is True and result["end_of_turn"] is False
    summary = pq.read_table(out / "summary.parquet").to_pylist()
    assert {row["per_token"] for row in summary} == {True}
    lm = load_model(str(tiny_model_dir))
    test = load_concept("agreeableness").split(0.0, 0.2, seed=0).test
    intervention = load_intervention(out / "intervention.safetensors", lm)
    scores = evaluate(lm, encode_pairs(lm.tokenizer, test), intervention, [-1, 0, 2], True)
    expected = scores.summary().column("pref_odds").to_pylist()
    assert [row["test_pref_odds"] for row in summary] == pytest.approx(expected, rel=1e-5)


def test_interrupted_sweep_leaves_no_output(tmp_path, tiny_model_dir, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_manifold", interrupted)
    out = tmp_path / "sweep"
    argv = ["sweep", "--model", str(tiny_model_dir), "--layer", "1", "--m=-1,0,1,2", "--no-fit"]
    status = main([*argv, "--factors", "2,4", "--steps", "6", "--out", str(out), "-q"])
    assert status == 130
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--m", ""], "argument --m: expected comma-separated numbers, not '' (an item is empty)"),
        (["--m", "1,nan"], "m must be finite"),
        (["--m", "1,x"], "expected comma-separated numbers"),
        (["--m", "3,3"], "--m: a sweep needs at least 2 distinct values of m, got 1"),
        (["--layer", "7"], "layer 7 is out of range"),
        (["--form", "lora", "--objective", "diffmean"], "diffmean cannot produce a lora"),
        (["--form", "lora", "--rank", "0"], "--rank must be at least 1, not 0"),
        (["--test-fraction", "1.5"], "--test-fraction must be between 0 and 1"),
        (
            ["--factors", ""],
            "argument --factors: expected comma-separated numbers, not '' (an item is empty)",
        ),
    ],
)
def test_bad_sweep_input_is_one_line_exit_2(tmp_path, tiny_model_dir, capsys, flags, message):
    out = tmp_path / "sweep"
    status = main(["sweep", "--model", str(tiny_model_dir), "--out", str(out), "-q", *flags])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "grid,message",
    [
        ("-4,-1,0,1,4,4", "5 distinct m, but the pref fit has 8 free parameters and needs at "
         "least 16 distinct m"),
        (",".join(str(i) for i in range(20)), "needs m of both signs (one decay branch each), "
         "none with m < 0"),
    ],
)  # fmt: skip
def test_cli_refuses_a_grid_the_fits_cannot_use_before_loading(
    tmp_path, tiny_model_dir, monkeypatch, capsys, grid, message
):
    monkeypatch.setattr("steerfront.models.load_checked", _no_training)
    monkeypatch.setattr(sweep, "fit", _no_training)
    out = tmp_path / "sweep"
    status = main(["sweep", "--model", str(tiny_model_dir), f"--m={grid}", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert err == f"steerfront: error: --m: {message} (give more values of m, or pass --no-fit)\n"
    assert not out.exists()
