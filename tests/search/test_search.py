"""A real search end to end: local Ray, Optuna, a SQLite MLflow store, a tiny model."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from steerfront.cli import main


def search(tmp_path, model_dir, *flags):
    argv = [
        "search",
        "--model",
        str(model_dir),
        "--storage",
        str(tmp_path / "runs"),
        "--json",
        "-q",
    ]
    return main([*argv, *flags])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    """One 4-trial search whose trials differ only in m: one training, three cache hits."""
    tmp_path = tmp_path_factory.mktemp("search")
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "forms": ["vector"],
                "objectives": ["split"],
                "layers": [1],
                "m": [0.0, 3.0],
                "gamma": 5.0,
            }
        )
    )
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = search(
            tmp_path,
            tiny_model_dir,
            "--space",
            str(space),
            "--trials",
            "4",
            "--name",
            "s1",
            "--concurrency",
            "1",
        )
    assert status == 0
    return tmp_path, json.loads(out.getvalue().strip().splitlines()[-1])


def test_summary_counts(finished):
    _, summary = finished
    assert summary["name"] == "s1"
    assert summary["trials"] == 4 and summary["failed"] == 0
    assert summary["trainings"] == 1 and summary["cache_hits"] == 3
    assert summary["model_loads"] == 1


def test_front_is_exactly_the_non_dominated_trials(finished):
    tmp_path, summary = finished
    trials = pq.read_table(tmp_path / "runs" / "s1" / "trials.parquet").to_pylist()
    points = [(t["pref_odds"], t["util_odds"]) for t in trials]
    brute = {
        i
        for i, (p, u) in enumerate(points)
        if not any(
            (p2 >= p and u2 >= u) and (p2 > p or u2 > u) for j, (p2, u2) in enumerate(points)
        )
    }
    assert {t["trial_id"] for t in summary["front"]} == {trials[i]["trial_id"] for i in brute}
    assert all(np.isfinite(t["test_pref_odds"]) for t in trials)


def test_mlflow_parent_children_and_artifacts(finished):
    tmp_path, summary = finished
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) == 4
    for child in children:
        assert child.data.params["form"] == "vector" and "m" in child.data.params
        assert {"pref_odds", "util_odds", "util_drop", "train_s", "eval_s"} <= set(
            child.data.metrics
        )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.parquet", "front.parquet", "pareto.png", "hypervolume.png", "best.yaml"} <= (
        artifacts
    )
    assert "hypervolume" in parent.data.metrics


def test_front_and_best_commands(finished, capsys):
    tmp_path, summary = finished
    runs = str(tmp_path / "runs")
    assert main(["front", "s1", "--storage", runs, "--json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert len(front) == len(summary["front"])
    out = tmp_path / "exported"
    status = main(["best", "s1", "--storage", runs, "--rule", "knee", "--out", str(out), "--json"])
    assert status == 0
    picked = json.loads(capsys.readouterr().out)["best"]
    assert picked["trial_id"] in {t["trial_id"] for t in front}
    assert sorted(p.name for p in out.iterdir()) == [
        "best.yaml",
        "intervention.json",
        "intervention.safetensors",
    ]


def test_generate_with_the_exported_intervention(finished, tiny_model_dir, capsys):
    tmp_path, _ = finished
    path = tmp_path / "runs" / "s1" / "best" / "intervention.safetensors"
    status = main(
        [
            "generate",
            "--intervention",
            str(path),
            "--model",
            str(tiny_model_dir),
            "--max-new-tokens",
            "5",
            "Hello?",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0 and "unsteered:" in out and "steered (vector at layer 1" in out


def test_a_failing_trial_is_recorded_and_the_search_goes_on(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    monkeypatch.setenv("STEERFRONT_FAULT", "raise:lora")
    status = search(
        tmp_path,
        tiny_model_dir,
        "--trials",
        "4",
        "--name",
        "f1",
        "--layers",
        "1",
        "--forms",
        "vector,lora",
        "--objectives",
        "diffmean,sft",
        "--seed",
        "3",
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0
    trials = pq.read_table(tmp_path / "runs" / "f1" / "trials.parquet").to_pylist()
    failed = [t for t in trials if t["status"] == "failed"]
    assert failed and all(t["form"] == "lora" for t in failed)
    assert all("injected fault" in t["error"] for t in failed)
    assert summary["failed"] == len(failed)
    assert all(t["form"] == "vector" for t in summary["front"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("steerfront").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_parent_run_id']}'",
    )
    assert sorted(r.info.status for r in runs).count("FAILED") == len(failed)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--layers", "9"], "layers [9] are outside the model"),
        (["--trials", "0"], "--trials must be at least 1"),
        (["--forms", "blend"], "forms: unknown form 'blend'"),
        (["--resume", "nosuch"], "no search named 'nosuch'"),
    ],
)
def test_bad_search_input(tmp_path, tiny_model_dir, capsys, flags, message):
    status = search(tmp_path, tiny_model_dir, *flags)
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1
