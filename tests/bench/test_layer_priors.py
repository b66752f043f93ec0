"""bench/layer_priors.py, small (tiny model, two concepts), so that it cannot rot."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import layer_priors  # noqa: E402


def fake_neutral_kl(lm, *args, **kwargs):
    """kl = (m·|θ|)²/2 with |θ| the norm of all the intervention's parameters (|v| for a
    vector): the tiny model's gain without generating (as in test_cli_layers)."""

    def kl_of(intervention, m):
        norm = sum(float(t.norm()) ** 2 for t in intervention.params.values()) ** 0.5
        return 0.5 * (np.asarray(m) * norm) ** 2

    return kl_of


def test_bench_prints_each_priors_agreement_and_reads_back_what_it_measured(
    tmp_path, tiny_model_dir, capsys, monkeypatch
):
    from steerfront.scoring import priors

    monkeypatch.setattr(priors, "neutral_kl", fake_neutral_kl)
    argv = ["--model", str(tiny_model_dir), "--out", str(tmp_path)]
    summary = layer_priors.main([*argv, "--concepts", "sentiment", "formality"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1]) == json.loads(json.dumps(summary))
    assert set(summary["concepts"]) == {"sentiment", "formality"}
    for entry in summary["concepts"].values():
        assert entry["layers"] == 4  # the tiny model's layers, each with a gain
        for prior in ("navigator", "lens"):
            e = entry[prior]
            assert -1 <= e["lo"] <= e["rho"] <= e["hi"] <= 1
            assert e["top3"] in (0, 1 / 3, 2 / 3, 1)
    assert set(summary["mean"]) == {"navigator", "lens"}
    assert sum(line.startswith("sentiment ") for line in lines) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["formality.json", "sentiment.json"]
    # a second run reads the rows back instead of measuring them again
    assert (
        layer_priors.main([*argv, "--concepts", "sentiment"])["concepts"]["sentiment"]
        == (summary["concepts"]["sentiment"])
    )


def test_bench_rates_priors_and_diffmean_against_a_trained_forms_gain_at_the_kl_target(
    tmp_path, tiny_model_dir, capsys, monkeypatch
):
    from steerfront.defaults import PRIORS
    from steerfront.lm import load_model
    from steerfront.methods.objectives import Objective, TrainSpec
    from steerfront.methods.train import fit
    from steerfront.scoring import priors
    from steerfront.scoring.evaluate import evaluate

    monkeypatch.setattr(priors, "neutral_kl", fake_neutral_kl)
    monkeypatch.setattr(layer_priors, "neutral_kl", fake_neutral_kl)
    argv = ["--model", str(tiny_model_dir), "--out", str(tmp_path), "--concepts", "sentiment"]
    summary = layer_priors.main([*argv, "--trained", "vector", "--steps", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert json.loads(lines[-1])["trained"]["concepts"] == summary["trained"]["concepts"]
    trained = summary["trained"]
    assert (trained["form"], trained["steps"]) == ("vector", 2)
    entry = trained["concepts"]["sentiment"]
    assert entry["layers"] == 4
    for predictor in ("navigator", "lens", "diffmean"):
        e = entry[predictor]
        assert -1 <= e["lo"] <= e["rho"] <= e["hi"] <= 1
    assert sum(line.startswith("sentiment ") for line in lines) == 2 + 3

    rows = json.loads((tmp_path / "sentiment.vector-sft-2.json").read_text())["rows"]
    assert [r["layer"] for r in rows] == [0, 1, 2, 3]
    # layer 2 again, independently: the same training, its kl at the found m is the target,
    # and the gain is the steered test pref_odds less the unsteered one
    lm = load_model(str(tiny_model_dir))
    splits = layer_priors.concept_splits("sentiment", 300)
    intervention = fit(lm, splits.train, TrainSpec("vector", 2, Objective("sft"), steps=2))
    m = rows[2]["m"]
    assert fake_neutral_kl(lm)(intervention, m) == pytest.approx(PRIORS["kl"], rel=0.05)
    test = layer_priors.encode_pairs(lm.tokenizer, splits.test)
    steered = evaluate(lm, test, intervention, m=[m]).pref.mean()
    assert rows[2]["gain"] == pytest.approx(
        float(steered - evaluate(lm, test).pref.mean()), abs=1e-4
    )
    # --every 2: every other layer
    summary = layer_priors.main([*argv, "--trained", "lora", "--steps", "1", "--every", "2"])
    rows = json.loads((tmp_path / "sentiment.lora-sft-1.json").read_text())["rows"]
    assert [r["layer"] for r in rows] == [0, 2]
