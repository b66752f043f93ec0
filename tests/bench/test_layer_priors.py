"""bench/layer_priors.py, small (tiny model, two concepts), so that it cannot rot."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import layer_priors  # noqa: E402


def fake_neutral_kl(lm, *args, **kwargs):
    """kl = (m·|v|)²/2: the tiny model's gain without generating (as in test_cli_layers)."""

    def kl_of(intervention, m):
        return 0.5 * (np.asarray(m) * float(intervention.params["v"].norm())) ** 2

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
