import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from steerfront.cli import main
from steerfront.data import PairSet, load_concept
from steerfront.methods import TrainSpec
from steerfront.scoring import report
from steerfront.scoring.sweep import default_grid, run_sweep

PAIRS = PairSet("few", load_concept("agreeableness").pairs[:20])
GRID = [-4.0, -1.0, -0.3, 0.0, 0.3, 1.0, 4.0]


def test_default_grid_is_symmetric_and_denser_near_zero():
    grid = default_grid(TrainSpec(form="lora", layer=1))
    assert grid == sorted(grid) and 0.0 in grid
    assert np.allclose(grid, [-x for x in reversed(grid)])
    steps = np.diff(grid[len(grid) // 2 :])
    assert steps[0] < steps[-1]
    assert default_grid(TrainSpec(form="vector", layer=1))[-1] > grid[-1]


def test_sweep_scores_train_and_test_at_every_m(tiny_lm):
    splits = PAIRS.split(0.0, 0.25, seed=0)
    spec = TrainSpec(form="vector", layer=1, batch_size=4)
    result = run_sweep(tiny_lm, splits, spec, GRID)
    pairs = result["pairs"]
    assert pairs.num_rows == len(PAIRS) * len(GRID)
    assert set(pairs.column("split").to_pylist()) == {"train", "test"}
    summary = result["summary"].to_pylist()
    assert [row["m"] for row in summary] == GRID
    for key in ("train_pref_odds", "test_util_odds", "off_manifold", "knn_distance", "projection"):
        assert all(np.isfinite(row[key]) for row in summary), key
    # The manifold's distance is smallest where nothing is steered.
    off = [row["off_manifold"] for row in summary]
    assert np.argmin(off) == GRID.index(0.0)
    assert set(result["fits"]) == {"pref", "util"}
    assert 1 <= result["manifold"]["k"] <= tiny_lm.hidden_size


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
            "--out",
            str(out),
            "--json",
            "-q",
        ]
    )
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert result["out"] == str(out)
    names = sorted(path.name for path in out.iterdir())
    assert names == [
        "fits.json",
        "intervention.json",
        "intervention.safetensors",
        "manifold.png",
        "pairs.parquet",
        "summary.parquet",
        "sweep.png",
    ]
    assert pq.read_table(out / "summary.parquet").num_rows == len(GRID)
    assert set(json.loads((out / "fits.json").read_text())["fits"]) == {"pref", "util"}


def test_interrupted_sweep_leaves_no_output(tmp_path, tiny_model_dir, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_manifold", interrupted)
    out = tmp_path / "sweep"
    argv = ["sweep", "--model", str(tiny_model_dir), "--layer", "1", "--m=-1,0,1,2"]
    status = main([*argv, "--batch-size", "4", "--out", str(out), "-q"])
    assert status == 130
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--m", ""], "m-grid is empty"),
        (["--m", "1,nan"], "m must be finite"),
        (["--m", "1,x"], "expected comma-separated numbers"),
        (["--layer", "7"], "layer 7 is out of range"),
        (["--form", "lora", "--objective", "diffmean"], "diffmean cannot produce a lora"),
        (["--form", "lora", "--rank", "0"], "rank 0 must be between 1"),
        (["--test-fraction", "1.5"], "--test-fraction must be between 0 and 1"),
        (["--factors", ""], "training factors are empty"),
    ],
)
def test_bad_sweep_input_is_one_line_exit_2(tmp_path, tiny_model_dir, capsys, flags, message):
    out = tmp_path / "sweep"
    status = main(["sweep", "--model", str(tiny_model_dir), "--out", str(out), "-q", *flags])
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and err.count("\n") == 1
    assert not out.exists()
