"""Many concepts in one launch: one Ray job, the model loaded once per worker, a search per
concept under one MLflow parent, and the report across them."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from steerfront.cli import main
from steerfront.data import load_concept

SPACE = "forms: [vector]\nobjectives: [split]\nlayers: [1]\ngamma: 5.0\nsteps: [6]\n"


def launch(tmp_path, model_dir, *flags):
    (tmp_path / "space.yaml").write_text(SPACE)
    argv = ["search", "--model", str(model_dir), "--storage", str(tmp_path / "runs")]
    argv += ["--space", str(tmp_path / "space.yaml"), "--dtype", "float32", "--json", "-q"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main([*argv, *flags])
    lines = out.getvalue().strip().splitlines()
    return status, json.loads(lines[-1]) if lines else None


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_model_dir):
    tmp_path = tmp_path_factory.mktemp("launch")
    flags = ["--concept", "sentiment", "--concept", "formality", "--trials", "3"]
    status, summary = launch(tmp_path, tiny_model_dir, *flags, "--name", "l1", "--concurrency", "1")
    assert status == 0
    return tmp_path, summary


def test_one_search_per_concept_and_the_model_loaded_once(launched):
    tmp_path, summary = launched
    assert summary["launch"] == "l1"
    assert summary["model_loads"] == 1  # one worker served both concepts' trials
    assert sorted(r["concept"] for r in summary["report"]) == ["formality", "sentiment"]
    for name in ("l1-sentiment", "l1-formality"):
        trials = pq.read_table(tmp_path / "runs" / name / "trials.parquet").to_pylist()
        assert len(trials) == 3 and all(t["status"] == "done" for t in trials)
        assert (tmp_path / "runs" / name / "search.json").is_file()
    # each search's front is its own concept's: its baseline is that concept's unsteered model
    searches = {s["name"]: s for s in summary["searches"]}
    assert searches["l1-sentiment"]["baseline"] != searches["l1-formality"]["baseline"]


def test_report_rows_and_files(launched):
    tmp_path, summary = launched
    gains = [r["gain"] for r in summary["report"] if r["gain"] is not None]
    assert gains == sorted(gains, reverse=True)  # best gain first
    for row in summary["report"]:
        search = next(s for s in summary["searches"] if s["name"] == row["search"])
        assert row["gain"] == search["gain"]["mean"] and row["kl"] == search["best"]["kl"]
        assert row["verdict"].startswith(("beats", "does not", "no pick"))
    folder = tmp_path / "runs" / "l1"
    assert pq.read_table(folder / "report.parquet").num_rows == 2
    assert (folder / "report.png").read_bytes()[:4] == b"\x89PNG"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", "l1", "--storage", str(tmp_path / "runs"), "--json"]) == 0
    again = json.loads(out.getvalue())
    assert again["report"] == summary["report"] and again["model_loads"] == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", "l1", "--storage", str(tmp_path / "runs")]) == 0
    text = out.getvalue()
    assert "sentiment" in text and "formality" in text and "1 model loads" in text


def test_mlflow_one_parent_for_the_launch(launched):
    tmp_path, summary = launched
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    for search in summary["searches"]:
        run = client.get_run(search["mlflow_parent_run_id"])
        launch_run = client.get_run(run.data.tags["mlflow.parentRunId"])
        assert launch_run.data.tags["steerfront.launch"] == "l1"
        assert launch_run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(launch_run.info.run_id)}
    assert {"report.json", "report.png"} <= artifacts


def test_a_bad_concept_file_is_refused_before_anything_runs(tmp_path, tiny_model_dir, capsys):
    folder = tmp_path / "concepts"
    folder.mkdir()
    good = load_concept("sentiment")
    lines = [json.dumps({"prompt": p.prompt, "positive": p.positive, "negative": p.negative})
             for p in good]  # fmt: skip
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "b.jsonl").write_text(lines[0] + "\n{not json\n")
    status, _ = launch(tmp_path, tiny_model_dir, "--concepts", str(folder), "--name", "bad")
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "b.jsonl" in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_grouped_parquet_is_one_concept_per_group_and_failures_stay_in_theirs(
    tmp_path, tiny_model_dir, monkeypatch
):
    rows = []
    for concept in ("sentiment", "formality"):
        for p in load_concept(concept):
            rows.append({"input": p.prompt, "winning_output": p.positive,
                         "losing_output": p.negative, "output_concept": concept})  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "set.parquet")
    monkeypatch.setenv("STEERFRONT_FAULT", "raise:g1-formality")  # every trial of one concept
    flags = ["--concepts", str(tmp_path / "set.parquet"), "--name", "g1", "--trials", "2"]
    status, summary = launch(tmp_path, tiny_model_dir, *flags, "--concurrency", "1")
    assert status == 0
    rows = {r["concept"]: r for r in summary["report"]}
    assert rows.keys() == {str(tmp_path / "runs" / "g1" / "concepts" / f"{c}.parquet")
                           for c in ("sentiment", "formality")}  # fmt: skip
    failed = next(r for c, r in rows.items() if c.endswith("formality.parquet"))
    kept = next(r for c, r in rows.items() if c.endswith("sentiment.parquet"))
    assert failed["failed"] == 2 and failed["verdict"] == "no pick"
    assert kept["failed"] == 0 and kept["trials"] == 2


def test_resume_after_the_launch_driver_is_killed(tmp_path, tiny_model_dir):
    runs = tmp_path / "runs"
    (tmp_path / "space.yaml").write_text(SPACE.replace("[split]", "[split, sft]"))
    base = [sys.executable, "-m", "steerfront.cli", "search", "--storage", str(runs), "--json"]
    flags = ["--model", str(tiny_model_dir), "--name", "k1", "--trials", "4", "-q"]
    flags += ["--concept", "sentiment", "--concept", "formality", "--concurrency", "1"]
    flags += ["--space", str(tmp_path / "space.yaml")]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen([*base, *flags], env=env, stdout=subprocess.PIPE, text=True)
    tables = [runs / f"k1-{c}" / "trials.parquet" for c in ("sentiment", "formality")]

    def kept():
        return sum(pq.read_table(t).num_rows for t in tables if t.is_file())

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and kept() < 3:
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = {t: pq.read_table(t).to_pylist() for t in tables if t.is_file()}
    assert 3 <= sum(len(v) for v in before.values()) < 8

    resumed = subprocess.run([*base, "-q", "--resume", "k1"], env=env, capture_output=True,
                             text=True, timeout=900)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert len(summary["report"]) == 2
    trainings = 0
    for table in tables:
        after = pq.read_table(table).to_pylist()
        ids = [t["trial_id"] for t in after]
        assert len(ids) == len(set(ids)) == 4
        for trial in before.get(table, []):  # finished trials kept as they were
            assert next(t for t in after if t["trial_id"] == trial["trial_id"]) == trial
        trainings += sum(t["trained"] or 0 for t in after)
    keys = {t["train_key"] for table in tables for t in pq.read_table(table).to_pylist()}
    assert trainings <= len(keys)  # nothing trained twice


def test_a_launchs_search_is_resumed_with_its_launch(launched, capsys):
    tmp_path, _ = launched
    argv = ["search", "--storage", str(tmp_path / "runs"), "--resume", "l1-sentiment"]
    assert main(argv) == 2
    assert "is one of launch 'l1'; resume it with --resume l1" in capsys.readouterr().err
