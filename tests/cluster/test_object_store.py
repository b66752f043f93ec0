"""Searches whose --storage is an object store: a real S3-compatible server (moto's, over HTTP
on 127.0.0.1) and a two-node Ray cluster whose nodes keep separate local mirrors, so that the
trained interventions they share can only have travelled through the store."""

import json
import subprocess
import sys
import time

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import free_port

from steerfront.cli import main

BUCKET = "steerfront-test"


@pytest.fixture
def s3(monkeypatch):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            fs.create_dir(BUCKET)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    yield fs
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def head_node(tmp_path):
    """A one-CPU Ray head node with its own STEERFRONT_CACHE (its own mirror of the store)."""
    import ray
    from ray.cluster_utils import Cluster

    mirror = tmp_path / "mirror-head"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "env_vars": {"STEERFRONT_CACHE": str(mirror)}},
    )
    yield cluster, mirror
    ray.shutdown()
    cluster.shutdown()


def keys(fs: pafs.FileSystem, prefix: str) -> set[str]:
    selector = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
    infos = fs.get_file_info(selector)
    return {i.path.removeprefix(f"{BUCKET}/{prefix}/") for i in infos if i.is_file}


def read_trials(fs: pafs.FileSystem) -> list[dict]:
    path = f"{BUCKET}/runs/s3/trials.parquet"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return []
    with fs.open_input_file(path) as source:
        return pq.read_table(source).to_pylist()


def test_search_keeps_everything_in_the_store_and_nodes_share_its_cache(
    tmp_path, tiny_model_dir, s3, head_node, monkeypatch, capsys
):
    """A search starts on a one-node cluster and its driver is killed once its first training
    reached the store; a second node (own, empty mirror) joins; the resumed search (from
    another machine's empty mirror) runs trials on both nodes, the new node's with the
    intervention the first trained."""
    cluster, head_mirror = head_node
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path / "mirror-driver"))
    storage = f"s3://{BUCKET}/runs"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "space.yaml"  # one train key: trials differ only in m
    space.write_text("forms: [vector]\nobjectives: [split]\nlayers: [1]\ngamma: 5.0\nsteps: [6]\n")
    common = ["--storage", storage, "--tracking-uri", tracking, "--address", cluster.address]
    flags = ["--model", str(tiny_model_dir), "--name", "s3", "--trials", "12"]
    flags += ["--space", str(space), "--dense-m", "3", "--concurrency", "2", "-q"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "steerfront.cli", "search", *common, *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (trained := [k for k in keys(s3, "runs/s3") if k.endswith(".safetensors")]):
        assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read()
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    assert len(read_trials(s3)) < 12
    with s3.open_input_stream(f"{BUCKET}/runs/s3/{trained[0][: -len('.safetensors')]}.json") as f:
        head = json.loads(f.read())["meta"]["node"]  # where it was trained

    cluster.add_node(num_cpus=1, env_vars={"STEERFRONT_CACHE": str(tmp_path / "mirror-worker")})
    cluster.wait_for_nodes()
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path / "mirror-laptop"))
    assert main(["search", "--resume", "s3", *common, "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    trials = read_trials(s3)
    assert len({t["trial_id"] for t in trials}) == 12 == summary["trials"]
    assert all(t["status"] == "done" for t in trials)
    assert summary["trainings"] <= 1  # 0 if the driver died before the training trial was kept
    moved = [t for t in trials if t["node"] != head]
    assert moved, "the second node ran no trial"
    assert all(t["cache_hit"] and t["trained_on"] == head for t in moved)
    assert list((tmp_path / "mirror-worker").glob("storage/*/cache/*.safetensors"))

    stored = keys(s3, "runs/s3")
    assert {"search.json", "trials.parquet", "front.parquet", "pareto.png"} <= stored
    # best/ only where the pick beats the unsteered model (the tiny model's barely moves)
    assert ("best/best.yaml" in stored) is bool(summary["beats_baseline"])
    assert any(k.startswith("experiment_state") for k in stored), "Ray Tune's state is missing"

    # Yet another machine with an empty mirror reads the front and exports the best.
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path / "mirror-desk"))
    assert main(["front", "s3", "--storage", storage, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["front"]) == len(summary["extended_front"])
    assert main(["best", "s3", "--storage", storage, "--rule", "knee", "--json", "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["best"]["trial_id"] in {
        t["trial_id"] for t in trials
    }
    assert "best-knee/intervention.safetensors" in keys(s3, "runs/s3")


def test_object_store_needs_a_tracking_server_and_a_reachable_store(
    tmp_path, tiny_model_dir, s3, monkeypatch, capsys
):
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path / "mirror"))
    argv = ["search", "--model", str(tiny_model_dir), "--storage", "s3://nosuch-bucket/runs"]
    assert main(argv) == 2
    assert "cannot live in an object store; give --tracking-uri" in capsys.readouterr().err
    argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "storage s3://nosuch-bucket/runs" in err and "bucket does not exist" in err
    assert err.count("\n") == 1
    assert not list((tmp_path / "mirror").glob("storage/*/search.json"))
