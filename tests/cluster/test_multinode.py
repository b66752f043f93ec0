"""The same search on a real multi-node Ray cluster (Ray's own local cluster utilities), with
a shared storage folder and a real MLflow tracking server over HTTP."""

import json

import pyarrow.parquet as pq
import pytest
from conftest import free_port, start_mlflow_server, stop_mlflow_server
from mlflow.tracking import MlflowClient

from steerfront.cli import main


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(server)


@pytest.fixture
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_search_spreads_over_nodes_shares_the_cache_and_tracks_to_a_server(
    tmp_path, tiny_model_dir, two_nodes, mlflow_server, capsys
):
    storage = tmp_path / "shared"
    space = tmp_path / "space.yaml"  # one train key: trials differ only in m
    space.write_text("forms: [vector]\nobjectives: [split]\nlayers: [1]\ngamma: 5.0\nsteps: [6]\n")
    flags = ["--model", str(tiny_model_dir), "--storage", str(storage), "--name", "multi"]
    flags += ["--trials", "8", "--space", str(space)]
    flags += ["--address", two_nodes.address, "--concurrency", "2"]
    flags += ["--tracking-uri", mlflow_server, "--json", "-q"]
    assert main(["search", *flags]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    trials = pq.read_table(storage / "multi" / "trials.parquet").to_pylist()
    assert len(trials) == 8 and all(t["status"] == "done" for t in trials)
    nodes = {t["node"] for t in trials}
    assert len(nodes) == 2, "trials ran on one node only"
    # One training key: each node trains it at most once (two nodes that start together both
    # train it, as the README says), every other trial reuses it, and the shared storage holds it.
    assert {t["trained_on"] for t in trials} <= nodes
    assert sum(not t["cache_hit"] for t in trials) <= len(nodes)
    assert len(list((storage / "multi" / "cache").glob("*.safetensors"))) == 1
    assert summary["model_loads"] == 2  # one per worker, kept across its trials

    client = MlflowClient(tracking_uri=mlflow_server)
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "multi"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(children) == 8
    assert {c.data.tags["steerfront.trial_id"] for c in children} == {t["trial_id"] for t in trials}
    assert "pareto.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_unreachable_address_fails_in_one_line(tmp_path, tiny_model_dir, capsys):
    status = main(
        ["search", "--model", str(tiny_model_dir), "--storage", str(tmp_path), "-q",
         "--address", "127.0.0.1:9"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2
    assert "Ray cluster at 127.0.0.1:9 is unreachable" in err and err.count("\n") == 1


def test_a_launch_spreads_over_nodes_and_loads_the_model_once_per_worker(
    tmp_path, tiny_model_dir, two_nodes, capsys
):
    storage = tmp_path / "shared"
    space = tmp_path / "space.yaml"
    space.write_text("forms: [vector]\nobjectives: [split]\nlayers: [1]\ngamma: 5.0\nsteps: [6]\n")
    flags = ["--model", str(tiny_model_dir), "--storage", str(storage), "--name", "many"]
    flags += ["--trials", "4", "--space", str(space), "--concept", "sentiment"]
    flags += ["--concept", "formality", "--address", two_nodes.address, "--concurrency", "2"]
    assert main(["search", *flags, "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(r["concept"] for r in summary["report"]) == ["formality", "sentiment"]
    tables = [storage / f"many-{c}" / "trials.parquet" for c in ("sentiment", "formality")]
    trials = [t for table in tables for t in pq.read_table(table).to_pylist()]
    assert len(trials) == 8 and all(t["status"] == "done" for t in trials)
    assert len({t["node"] for t in trials}) == 2, "trials ran on one node only"
    assert summary["model_loads"] <= 2  # once per worker, not once per concept per worker
