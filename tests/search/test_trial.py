import json
from dataclasses import replace

import pytest

from steerfront.search.trial import DENSE_SPAN, dense_grid


@pytest.mark.parametrize("m", [0.0, 0.7, 2.0, 3.9, 4.0])
def test_dense_grid_is_a_window_around_m_inside_the_range(m):
    grid = dense_grid(m, 0.0, 4.0, 9)
    assert m not in grid and len(grid) in (8, 9)  # 8 when m is one of the 9
    window = [min([*grid, m]), max([*grid, m])]
    assert 0.0 <= window[0] and window[1] <= 4.0
    assert window[1] - window[0] == pytest.approx(DENSE_SPAN * 4.0)
    if 1.0 <= m <= 3.0:  # far enough from the ends: centred
        assert (window[0] + window[1]) / 2 == pytest.approx(m)


def test_dense_grid_off_or_degenerate():
    assert dense_grid(1.0, 0.0, 4.0, 0) == []
    assert dense_grid(1.0, 1.0, 1.0, 9) == []


def test_a_workers_share_and_cache_budget(monkeypatch):
    import torch

    from steerfront import memory
    from steerfront.search.trial import SearchSetup

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setattr(memory, "device_memory", lambda device: 64 * memory.GB)
    setup = SearchSetup("m", "c", None, 0.2, 0.2, 0, "/tmp", "s", {}, cpus_per_trial=2.0)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert setup.share(cpu) == 0.25 and setup.share(gpu) == 0.0
    assert setup.cache_bytes(cpu) == int(memory.CACHE_SHARE * 0.25 * 64 * memory.GB)
    shared = SearchSetup("m", "c", None, 0.2, 0.2, 0, "/tmp", "s", {}, gpus_per_trial=0.5)
    assert shared.share(gpu) == 0.5
    assert shared.cache_bytes(gpu) == int(memory.CACHE_SHARE * 0.5 * 64 * memory.GB)
    given = SearchSetup("m", "c", None, 0.2, 0.2, 0, "/tmp", "s", {}, cache_gb=1.5)
    assert given.cache_bytes(cpu) == given.cache_bytes(gpu) == int(1.5 * memory.GB)


def test_per_token_setup_scores_baseline_and_trials_per_token(
    tmp_path, tiny_model_dir, monkeypatch
):
    """The unsteered baseline and a trial's metrics are on the scale the setup names."""
    from types import SimpleNamespace

    from steerfront.data import encode_pairs
    from steerfront.lm import load_model
    from steerfront.methods.io import load_intervention
    from steerfront.scoring.evaluate import evaluate
    from steerfront.search import trial
    from steerfront.search.space import load_space
    from steerfront.search.trial import SearchSetup, run_trial
    from steerfront.search.worker import unsteered

    setup = SearchSetup(
        model=str(tiny_model_dir),
        concept="sentiment",
        fmt=None,
        val_fraction=0.2,
        test_fraction=0.2,
        seed=0,
        storage=str(tmp_path),
        name="s",
        baseline={},
        per_token=True,
        dtype="float32",
    )
    space = load_space(None, {"layers": [1], "forms": ["vector"]})
    done = unsteered(setup, space)
    scores = done.baselines
    baseline, utils, prefs = scores["baseline"], scores["baseline_util"], scores["baseline_pref"]
    assert done.prior == {}  # no layer prior unless one is asked for
    lm = load_model(str(tiny_model_dir))
    splits = setup.splits()
    for split in ("val", "test"):
        encoded = encode_pairs(lm.tokenizer, getattr(splits, split))
        row = evaluate(lm, encoded, None, 0.0, per_token=True).summary().to_pylist()[0]
        assert baseline[f"{split}_util_odds"] == pytest.approx(row["util_odds"], abs=1e-5)
        summed = evaluate(lm, encoded, None, 0.0).summary().to_pylist()[0]
        assert abs(summed["util_odds"] - row["util_odds"]) > 1  # the scales differ
    setup = replace(setup, **scores)
    context = SimpleNamespace(get_node_id=lambda: "node")
    monkeypatch.setattr(trial.ray, "get_runtime_context", lambda: context)
    config = {"form": "vector", "objective": "diffmean", "layer": 1, "m": 2.0}
    metrics = run_trial(config, setup)
    intervention = load_intervention(tmp_path / "s" / "cache" / metrics["train_key"], lm)
    encoded = encode_pairs(lm.tokenizer, splits.val)
    row = evaluate(lm, encoded, intervention, 2.0, per_token=True).summary().to_pylist()[0]
    assert metrics["pref_odds"] == pytest.approx(row["pref_odds"], abs=1e-5)
    assert metrics["util_drop"] == pytest.approx(baseline["val_util_odds"] - row["util_odds"])
    # Per-pair test scores, the unsteered model's and the trial's, for best's paired verdict.
    encoded = encode_pairs(lm.tokenizer, splits.test)
    for scores, pref, util in (
        (evaluate(lm, encoded, None, 0.0, per_token=True), prefs["test"], utils["test"]),
        (
            evaluate(lm, encoded, intervention, 2.0, per_token=True),
            json.loads(metrics["test_pref_pairs"]),
            json.loads(metrics["test_util_pairs"]),
        ),
    ):
        assert pref == pytest.approx(scores.pref.tolist(), abs=1e-5)
        assert util == pytest.approx(scores.util.tolist(), abs=1e-5)


def test_the_prompted_baseline_is_the_unsteered_model_asked_for_the_concept(
    tmp_path, tiny_model_dir, monkeypatch
):
    """The prompted row's numbers are a direct evaluation on the instructed pairs, its
    util_drop against the unsteered model's per-pair utility, its kl `prompted_kl`'s."""
    from steerfront.data import encode_pairs
    from steerfront.data.prompts import neutral_prompts
    from steerfront.defaults import CONCEPT_INSTRUCTIONS, KL_NEW_TOKENS, KL_PROMPTS
    from steerfront.lm import load_model
    from steerfront.scoring.evaluate import evaluate
    from steerfront.scoring.kl import prompted_kl, unsteered_answers
    from steerfront.search.space import load_space
    from steerfront.search.trial import SearchSetup
    from steerfront.search.worker import unsteered

    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path / "cache"))
    setup = SearchSetup(
        str(tiny_model_dir), "sentiment", None, 0.2, 0.2, 0, str(tmp_path), "s", {},
        dtype="float32",
    )  # fmt: skip
    assert setup.instruction == CONCEPT_INSTRUCTIONS["sentiment"]["+"]
    space = load_space(None, {"layers": [1], "forms": ["vector"]})
    scores = unsteered(setup, space).baselines
    prompted, base = scores["prompted"], scores["baseline"]
    lm = load_model(str(tiny_model_dir))
    for split in ("val", "test"):
        pairs = getattr(setup.splits(), split)
        plain = evaluate(lm, encode_pairs(lm.tokenizer, pairs), None, 0.0)
        asked = encode_pairs(lm.tokenizer, pairs.instructed(setup.instruction))
        told = evaluate(lm, asked, None, 0.0)
        row = told.summary().to_pylist()[0]
        assert prompted[f"{split}_pref_odds"] == pytest.approx(row["pref_odds"], abs=1e-5)
        assert prompted[f"{split}_util_odds"] == pytest.approx(row["util_odds"], abs=1e-5)
        drop = (plain.util - told.util).mean()
        assert prompted[f"{split}_util_drop"] == pytest.approx(drop, abs=1e-5)
        assert prompted[f"{split}_pref_odds_lo"] < prompted[f"{split}_pref_odds_hi"]
        assert scores["prompted_pref"][split] == pytest.approx(told.pref.tolist(), abs=1e-5)
        assert prompted[f"{split}_pref_odds"] != pytest.approx(base[f"{split}_pref_odds"])
    answers = unsteered_answers(lm, neutral_prompts(count=KL_PROMPTS), KL_NEW_TOKENS)
    kl = prompted_kl(lm, answers, setup.instruction).metrics(0)[0.0]
    assert prompted["val_kl"] == pytest.approx(kl["kl"], abs=1e-6) and kl["kl"] > 0
    assert prompted["val_kl_first"] == pytest.approx(kl["kl_first"], abs=1e-6)
    assert prompted["val_kl_lo"] <= prompted["val_kl"] <= prompted["val_kl_hi"]


def test_the_instruction_of_a_concept_file_names_it_in_words():
    from steerfront.search.trial import SearchSetup, asked_concept

    setup = SearchSetup("m", "/data/speaking_like_a_pirate.jsonl", None, 0.2, 0.2, 0, "/t", "s", {})
    assert asked_concept(setup.concept) == "speaking like a pirate"
    assert setup.instruction.endswith("clearly express this: speaking like a pirate.")
