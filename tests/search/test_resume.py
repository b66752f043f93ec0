"""Kill the driver mid-search, resume, and count: nothing lost, nothing run or logged twice."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient


def test_resume_after_the_driver_is_killed(tmp_path, tiny_model_dir):
    runs = tmp_path / "runs"
    base = [
        sys.executable,
        "-m",
        "steerfront.cli",
        "search",
        "--storage",
        str(runs),
        "--json",
        "-q",
    ]
    flags = ["--model", str(tiny_model_dir), "--name", "r1", "--trials", "6", "--layers", "1,2"]
    flags += ["--forms", "vector", "--objectives", "split,sft", "--concurrency", "1"]
    flags += ["--steps", "6"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen([*base, *flags], env=env, stdout=subprocess.PIPE, text=True)
    table = runs / "r1" / "trials.parquet"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if table.is_file() and pq.read_table(table).num_rows >= 2:
            break
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = pq.read_table(table).to_pylist()
    assert 2 <= len(before) < 6

    resumed = subprocess.run(
        [*base, "--resume", "r1"], env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    after = pq.read_table(table).to_pylist()
    ids = [t["trial_id"] for t in after]
    assert len(ids) == len(set(ids)) == 6 == summary["trials"]
    kept = {t["trial_id"]: t for t in after}
    for trial in before:  # finished trials kept as they were
        assert kept[trial["trial_id"]]["pref_odds"] == trial["pref_odds"]
    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    children = client.search_runs(
        [client.get_experiment_by_name("steerfront").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'",
    )
    assert sorted(c.data.tags["steerfront.trial_id"] for c in children) == sorted(ids)
