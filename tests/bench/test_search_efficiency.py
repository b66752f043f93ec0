"""The search-efficiency benchmark, small (tiny model, a few trials), so that it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

BENCH = Path(__file__).parents[2] / "bench" / "search_efficiency.py"


def test_bench_runs_every_strategy_and_prints_fractions(tmp_path, tiny_model_dir):
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump({"forms": ["vector"], "objectives": ["diffmean"], "m": [-8.0, 8.0]})
    )
    out = tmp_path / "bench"
    argv = [sys.executable, str(BENCH), "--model", str(tiny_model_dir), "--space", str(space)]
    argv += [
        "--concept",
        "sentiment",
        "--layers",
        "1,2",
        "--m-values",
        "4",
        "--fraction",
        "0.25",
        "--out",
        str(out),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    fractions = json.loads(lines[-1])
    assert set(fractions) == {"random", "tpe", "nsga2", "tpe_extended"}
    assert all(0 <= value <= 1.5 for value in fractions.values())
    table = {row[0]: row for row in map(str.split, lines) if row and row[0] in fractions}
    assert table["tpe"][1] == "2" and table["tpe_extended"][1] == "2"  # 25% of 2 x 4 points
    assert int(table["tpe_extended"][2]) > 2  # dense points joined the extended front's points
    assert (out / "fronts.png").stat().st_size > 0


def test_priors_compare_guided_tpe_plain_tpe_and_random_with_four_times_the_trials(
    tmp_path, tiny_model_dir
):
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {"forms": ["vector"], "objectives": ["diffmean"], "layers": [0, 1, 2, 3], "m": [-8, 8]}
        )
    )
    out = tmp_path / "bench"
    argv = [sys.executable, str(BENCH), "--model", str(tiny_model_dir), "--space", str(space)]
    argv += ["--concept", "sentiment", "--priors", "1", "--dense-m", "2", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert set(summary) == {"prior_tpe", "tpe", "random_4x", "trainings"}
    assert max(summary[name] for name in ("prior_tpe", "tpe", "random_4x")) == 1.0
    assert set(summary["trainings"]) == {"prior_tpe", "tpe", "random_4x"}
    table = {row[0]: row for row in map(str.split, lines) if row and row[0] in summary}
    assert (table["prior_tpe"][1], table["tpe"][1], table["random_4x"][1]) == ("1", "1", "4")
    prior = json.loads((out / "runs" / "prior_tpe" / "search.json").read_text())["layer_prior"]
    assert prior["name"] == "navigator" and len(prior["scores"]) == 4
