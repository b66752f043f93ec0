"""A tiny search with a layer prior: scored once before the trials, kept in search.json and
MLflow, its best layers searched first, and `top:K` keeping only its K best."""

import json

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

from steerfront.cli import main
from steerfront.lm import load_model
from steerfront.scoring.priors import layer_scores
from steerfront.search.space import top_layers
from steerfront.search.trial import SearchSetup


def test_a_search_scores_its_layer_prior_once_and_keeps_it(tmp_path, tiny_model_dir, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {"forms": ["vector"], "objectives": ["diffmean"], "layers": [0, 1, 2, 3], "m": [0, 3]}
        )
    )
    runs = tmp_path / "runs"
    status = main(
        ["search", "--model", str(tiny_model_dir), "--storage", str(runs), "--json", "-q"]
        + ["--space", str(space), "--trials", "3", "--name", "p", "--concurrency", "1"]
        + ["--dense-m", "0", "--layer-prior", "navigator", "--layers", "top:2"]
    )
    assert status == 0, capsys.readouterr().err[-2000:]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    state = json.loads((runs / "p" / "search.json").read_text())
    prior = state["layer_prior"]
    assert prior["name"] == "navigator" and sorted(prior["scores"]) == ["0", "1", "2", "3"]
    # The navigator's d + c on the search's own training pairs, every layer of the space.
    setup = SearchSetup(**state["setup"])
    lm = load_model(str(tiny_model_dir))
    expected = layer_scores(lm, setup.encode(lm, setup.splits().train), layers=[0, 1, 2, 3])
    scores = [prior["scores"][str(layer)] for layer in range(4)]
    assert scores == pytest.approx(expected.score.tolist(), abs=1e-6)
    best = top_layers([0, 1, 2, 3], scores, 2)
    assert state["layers"] == sorted(best) and state["settings"]["top_layers"] == 2
    trials = pq.read_table(runs / "p" / "trials.parquet").to_pylist()
    assert {t["layer"] for t in trials} <= set(best)
    first = min(trials, key=lambda t: t["trial_id"])  # the first point: the prior's best layer
    assert first["layer"] == best[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    parent = client.get_run(summary["mlflow_parent_run_id"])
    assert parent.data.params["layer_prior"] == "navigator"
    assert parent.data.params["top_layers"] == "2"
    history = client.get_metric_history(parent.info.run_id, "layer_prior_score")
    assert {m.step: m.value for m in history} == pytest.approx(dict(enumerate(scores)))
