"""bench/launch.py, small (tiny model, two concepts), so that it cannot rot."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import launch  # noqa: E402


def test_bench_times_both_ways_and_counts_loads(tiny_model_dir, capsys):
    argv = ["--model", str(tiny_model_dir), "--concepts", "sentiment", "formality"]
    result = launch.main([*argv, "--trials", "2", "--steps", "4", "--concurrency", "1"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == result
    # the times are kept to 0.1 s and the ratio to 0.001, each from the unrounded times
    assert result["ratio"] == pytest.approx(result["launch_s"] / result["separate_s"], abs=2e-3)
    assert result["model_loads"] == {"separate": 2, "launch": 1}  # one worker, once per launch
    assert sorted(r["concept"] for r in result["report"]) == ["formality", "sentiment"]
