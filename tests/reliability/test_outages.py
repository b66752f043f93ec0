"""The MLflow server going away mid-search, and Ctrl-C: nothing is lost."""

import json
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
from conftest import free_port, start_mlflow_server, stop_mlflow_server
from mlflow.tracking import MlflowClient


def wait_for_rows(table, rows, process, limit=240):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if table.is_file() and pq.read_table(table).num_rows >= rows:
            return
        time.sleep(0.5)
    raise AssertionError(f"fewer than {rows} trials were kept in time")


def command(tmp_path, model_dir, *flags):
    base = [sys.executable, "-m", "steerfront.cli", "search", "--storage", str(tmp_path / "runs")]
    base += ["--model", str(model_dir), "--layers", "1", "--forms", "vector", "--steps", "6"]
    return [*base, *flags]


def test_mlflow_outage_keeps_every_result_and_resume_logs_the_rest(tmp_path, tiny_model_dir):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path, port)
    flags = ["--name", "outage", "--trials", "6", "--concurrency", "1", "--tracking-uri", uri]
    search = subprocess.Popen(
        command(tmp_path, tiny_model_dir, *flags, "--objectives", "sft"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    table = tmp_path / "runs" / "outage" / "trials.parquet"
    try:
        wait_for_rows(table, 2, search)
    finally:
        stop_mlflow_server(server)
    out, err = search.communicate(timeout=600)
    assert search.returncode == 0, err[-2000:]
    assert err.count("MLflow unavailable") == 1
    assert pq.read_table(table).num_rows == 6  # every result kept in the search's own storage

    server = start_mlflow_server(tmp_path, port)
    try:
        resumed = subprocess.run(
            [*command(tmp_path, tiny_model_dir), "--resume", "outage", "--json", "-q"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        summary = json.loads(resumed.stdout.strip().splitlines()[-1])
        client = MlflowClient(tracking_uri=uri)
        parent = client.get_run(summary["mlflow_parent_run_id"])
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        ids = {t["trial_id"] for t in pq.read_table(table).to_pylist()}
        assert len(children) == 6 and {c.data.tags["steerfront.trial_id"] for c in children} == ids
        assert parent.info.status == "FINISHED"
    finally:
        stop_mlflow_server(server)


def test_ctrl_c_keeps_what_it_has_and_says_how_to_resume(tmp_path, tiny_model_dir):
    flags = ["--name", "stopped", "--trials", "30", "--concurrency", "1", "--objectives", "sft"]
    search = subprocess.Popen(
        command(tmp_path, tiny_model_dir, *flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    table = tmp_path / "runs" / "stopped" / "trials.parquet"
    wait_for_rows(table, 2, search)
    search.send_signal(signal.SIGINT)
    out, err = search.communicate(timeout=300)
    assert search.returncode in (0, 130)
    kept = pq.read_table(table).num_rows
    assert 2 <= kept < 30
    assert "continue it with: steerfront search --resume stopped" in err
    assert (tmp_path / "runs" / "stopped" / "front.parquet").is_file()


def test_two_searches_share_one_store_at_once(tmp_path, tiny_model_dir):
    runs = []
    for name in ("left", "right"):
        flags = ["--name", name, "--trials", "4", "--concurrency", "1", "--objectives", "sft"]
        runs.append(
            subprocess.Popen(
                [*command(tmp_path, tiny_model_dir, *flags), "--json", "-q"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    summaries = []
    for process in runs:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-2000:]
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    for name, summary in zip(("left", "right"), summaries, strict=True):
        trials = pq.read_table(tmp_path / "runs" / name / "trials.parquet").to_pylist()
        parent = client.get_run(summary["mlflow_parent_run_id"])
        assert parent.info.run_name == name and parent.info.status == "FINISHED"
        children = client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        assert {c.data.tags["steerfront.trial_id"] for c in children} == {
            t["trial_id"] for t in trials
        }
        assert len(trials) == 4
