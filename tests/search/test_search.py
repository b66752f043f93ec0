"""A real search end to end: local Ray, Optuna, a SQLite MLflow store, a tiny model."""

import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient

import steerfront.search.run  # noqa: F401  (its modules bind the real load_model before patching)
from steerfront.cli import main
from steerfront.data import encode_pairs
from steerfront.lm import load_model
from steerfront.methods.io import load_intervention
from steerfront.scoring.evaluate import evaluate
from steerfront.search.best import read_trials
from steerfront.search.trial import SearchSetup


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


def refuse_models(patch):
    """Make every `load_model` this process can reach record the call and raise: Ray workers
    do a search's model work, the driver none."""
    loads = []

    def refuse(*args, **kwargs):
        loads.append(args)
        raise AssertionError("the search's driver loaded a model")

    for module in [m for n, m in sys.modules.items() if n.startswith("steerfront.")]:
        if hasattr(module, "load_model"):
            patch.setattr(module, "load_model", refuse)
    return loads


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    """One 4-trial search whose trials differ only in m: one training, three cache hits; its
    driver (this process) cannot load a model; completions scored with the end of turn."""
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
                "steps": [6],
            }
        )
    )
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as patch:
        loads = refuse_models(patch)
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
            "--end-of-turn",
            "--dtype",
            "float32",
            "--cache-gb",
            "0.5",
        )
    assert status == 0 and loads == []
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
        assert child.data.params["steps"] == "6"
        assert {"pref_odds", "util_odds", "util_drop", "train_s", "eval_s"} <= set(
            child.data.metrics
        )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.parquet", "front.parquet", "pareto.png", "hypervolume.png"} <= artifacts
    exported = {a.path for a in client.list_artifacts(parent.info.run_id, "best")}
    # best/ only where the pick beats the unsteered model (the tiny model's barely moves)
    assert summary["beats_baseline"] is (summary["exported"] is not None)
    if summary["beats_baseline"]:
        assert "best.yaml" in artifacts
        assert {"best/best.yaml", "best/intervention.safetensors"} <= exported
    else:
        assert "best.yaml" not in artifacts and not exported
        assert not (tmp_path / "runs" / "s1" / "best").exists()
    assert not (tmp_path / "runs" / "s1" / "artifacts").exists()  # logged from where they are
    assert "hypervolume" in parent.data.metrics
    assert parent.data.params["end_of_turn"] == "True"
    assert parent.data.params["dtype"] == "float32"
    assert parent.data.params["cache_gb"] == "0.5"
    assert parent.data.params["per_token"] == "False"
    prompted = summary["baselines"]["prompted"]
    for key in ("val_pref_odds", "test_util_odds", "val_kl", "val_kl_first"):
        assert parent.data.metrics[f"prompted_{key}"] == pytest.approx(prompted[key])


def test_front_and_best_commands(finished, capsys):
    tmp_path, summary = finished
    runs = str(tmp_path / "runs")
    assert main(["front", "s1", "--storage", runs, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    front = document["front"]
    assert len(front) == len(summary["extended_front"])
    assert document["baseline"] == summary["baseline"]
    assert document["baselines"] == summary["baselines"]
    assert summary["baselines"]["unsteered"] == summary["baseline"]
    assert set(summary["baselines"]["prompted"]) > {"val_pref_odds", "val_kl", "instruction"}
    assert main(["front", "s1", "--storage", runs, "--json", "--plain"]) == 0
    assert len(json.loads(capsys.readouterr().out)["front"]) == len(summary["front"])
    out = tmp_path / "exported"
    argv = ["best", "s1", "--storage", runs, "--rule", "knee", "--out", str(out), "--json"]
    assert main([*argv, "--force"]) == 0
    picked = json.loads(capsys.readouterr().out)["best"]
    assert picked["trial_id"] in {t["trial_id"] for t in front}
    assert sorted(p.name for p in out.iterdir()) == [
        "best.yaml",
        "intervention.json",
        "intervention.safetensors",
    ]


def test_dense_points_are_the_evaluator_at_their_m(finished, tiny_model_dir):
    tmp_path, _ = finished
    folder = tmp_path / "runs" / "s1"
    setup = SearchSetup(**json.loads((folder / "search.json").read_text())["setup"])
    trials = read_trials(folder)
    for trial in trials:
        ms = [point["m"] for point in trial["dense_points"]]
        assert len(ms) in (8, 9) and trial["m"] not in ms  # 9 unless the trial's m is one
        assert 0.0 <= min(ms) and max(ms) <= 3.0 and max(ms) - min(ms) == pytest.approx(1.5)
    lm = load_model(str(tiny_model_dir))
    assert setup.end_of_turn and setup.dtype == "float32"
    encoded = setup.encode(lm, setup.splits().val)
    assert encoded != encode_pairs(lm.tokenizer, setup.splits().val)
    trial = trials[0]
    intervention = load_intervention(folder / "cache" / trial["train_key"], lm)
    for point in (trial, trial["dense_points"][0], trial["dense_points"][-1]):
        row = evaluate(lm, encoded, intervention, point["m"]).summary().to_pylist()[0]
        for key in ("pref_odds", "util_odds", "accuracy"):
            assert point[key] == pytest.approx(row[key], abs=1e-4)
        assert point["util_drop"] == pytest.approx(
            setup.baseline["val_util_odds"] - row["util_odds"]
        )


def test_baselines_and_dense_test_metrics_are_the_evaluator(finished, tiny_model_dir):
    """Scored in workers (the driver could not load the model), they are what `evaluate`
    gives here on the same fp32 CPU model."""
    tmp_path, summary = finished
    folder = tmp_path / "runs" / "s1"
    setup = SearchSetup(**json.loads((folder / "search.json").read_text())["setup"])
    lm = load_model(str(tiny_model_dir))
    splits = setup.splits()
    for split in ("val", "test"):
        encoded = encode_pairs(lm.tokenizer, getattr(splits, split), end_of_turn=True)
        row = evaluate(lm, encoded, None, 0.0).summary().to_pylist()[0]
        for key in ("pref_odds", "util_odds"):
            assert setup.baseline[f"{split}_{key}"] == pytest.approx(row[key], abs=1e-4)
    encoded = encode_pairs(lm.tokenizer, splits.test, end_of_turn=True)
    front = pq.read_table(folder / "front.parquet").to_pylist()
    dense = [r for r in front if r["front"] == "extended" and r["dense"]]
    assert dense
    for point in dense:
        intervention = load_intervention(folder / "cache" / point["train_key"], lm)
        row = evaluate(lm, encoded, intervention, point["m"]).summary().to_pylist()[0]
        for key in ("pref_odds", "util_odds", "accuracy"):
            assert point[f"test_{key}"] == pytest.approx(row[key], abs=1e-4)
        assert point["test_util_drop"] == pytest.approx(
            setup.baseline["test_util_odds"] - row["util_odds"], abs=1e-4
        )


def test_the_prompted_baseline_is_the_evaluator_on_the_instructed_pairs(finished, tiny_model_dir):
    """The prompted row: the unsteered model with the concept's instruction in each prompt,
    scored as the search scores (with the end of turn here), its kl `prompted_kl`'s."""
    from steerfront.data.prompts import neutral_prompts
    from steerfront.defaults import KL_NEW_TOKENS, KL_PROMPTS
    from steerfront.scoring.kl import prompted_kl, unsteered_answers

    tmp_path, summary = finished
    setup = SearchSetup(**json.loads((tmp_path / "runs" / "s1" / "search.json").read_text())[
        "setup"])  # fmt: skip
    lm = load_model(str(tiny_model_dir))
    for split in ("val", "test"):
        pairs = getattr(setup.splits(), split).instructed(setup.instruction)
        scores = evaluate(lm, encode_pairs(lm.tokenizer, pairs, end_of_turn=True), None, 0.0)
        row = scores.summary().to_pylist()[0]
        for key in ("pref_odds", "util_odds"):
            assert setup.prompted[f"{split}_{key}"] == pytest.approx(row[key], abs=1e-4)
        assert setup.prompted_pref[split] == pytest.approx(scores.pref.tolist(), abs=1e-4)
    answers = unsteered_answers(lm, neutral_prompts(count=KL_PROMPTS), KL_NEW_TOKENS)
    kl = prompted_kl(lm, answers, setup.instruction).metrics(setup.seed)[0.0]
    assert setup.prompted["val_kl"] == pytest.approx(kl["kl"], abs=1e-5)
    assert summary["baselines"]["prompted"]["val_kl"] == setup.prompted["val_kl"]
    assessment = summary["prompted_gain"]
    assert assessment["pairs"] == len(setup.prompted_pref["test"])
    assert summary["beats_prompted"] is (assessment["lo"] > 0)


def test_extended_front_is_the_non_dominated_points_with_test_metrics(finished):
    tmp_path, summary = finished
    trials = read_trials(tmp_path / "runs" / "s1")
    points = [(t["trial_id"], t["m"], t["pref_odds"], t["util_odds"]) for t in trials] + [
        (t["trial_id"], d["m"], d["pref_odds"], d["util_odds"])
        for t in trials
        for d in t["dense_points"]
    ]
    brute = {
        (tid, m)
        for tid, m, p, u in points
        if not any((p2 >= p and u2 >= u) and (p2 > p or u2 > u) for _, _, p2, u2 in points)
    }
    extended = summary["extended_front"]
    assert {(r["trial_id"], r["m"]) for r in extended} == brute
    assert any(r["dense"] for r in extended)
    assert all(
        np.isfinite(r["test_pref_odds"]) and np.isfinite(r["test_util_drop"]) for r in extended
    )
    assert summary["hypervolume_extended"] >= summary["hypervolume"]
    table = pq.read_table(tmp_path / "runs" / "s1" / "front.parquet").to_pylist()
    assert sum(r["front"] == "plain" for r in table) == len(summary["front"])
    assert sum(r["front"] == "extended" for r in table) == len(extended)
    assert (summary["best"]["trial_id"], summary["best"]["m"]) in brute


def test_the_summary_carries_the_picks_paired_verdict(finished):
    """`search --json` gives the verdict as `best --json` does: the pick's per-pair gain over
    the unsteered model on test, from the per-pair scores front.parquet keeps."""
    from steerfront.search.best import assess, read_front

    tmp_path, summary = finished
    folder = tmp_path / "runs" / "s1"
    state = json.loads((folder / "search.json").read_text())
    pick = next(
        r
        for r in read_front(folder)
        if (r["trial_id"], r["m"]) == (summary["best"]["trial_id"], summary["best"]["m"])
    )
    pairs = len(state["setup"]["baseline_pref"]["test"])
    assert len(pick["test_pref_pairs"]) == len(pick["test_util_pairs"]) == pairs
    assert np.mean(pick["test_pref_pairs"]) == pytest.approx(pick["test_pref_odds"])
    assessment = assess(pick, state["setup"], state["settings"]["extra"]["max_util_drop"])
    for key in ("beats_baseline", "gain", "util_gain", "utility"):
        assert summary[key] == assessment[key]
    assert summary["gain"]["pairs"] == pairs
    assert summary["beats_baseline"] is (summary["gain"]["lo"] > 0)
    assert summary["util_gain"]["mean"] == pytest.approx(-pick["test_util_drop"])
    assert "test_pref_pairs" not in summary["best"]


def test_best_picks_from_the_extended_front_unless_plain(finished, capsys):
    tmp_path, summary = finished
    runs = str(tmp_path / "runs")
    picks = {}
    for flags in ([], ["--plain"]):
        out = str(tmp_path / f"best{len(flags)}")
        argv = ["best", "s1", "--storage", runs, "--out", out, "--json", "--force", *flags]
        assert main(argv) == 0
        picks[bool(flags)] = json.loads(capsys.readouterr().out)["best"]
    plain = {(r["trial_id"], r["m"]) for r in summary["front"]}
    assert (picks[True]["trial_id"], picks[True]["m"]) in plain and not picks[True]["dense"]
    extended = {(r["trial_id"], r["m"]) for r in summary["extended_front"]}
    assert (picks[False]["trial_id"], picks[False]["m"]) in extended
    assert picks[False]["pref_odds"] >= picks[True]["pref_odds"]


def test_front_table_starts_with_the_unsteered_model_and_shows_intervals(finished, capsys):
    tmp_path, summary = finished
    assert main(["front", "s1", "--storage", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "unsteered" and len(lines) == 3 + len(summary["extended_front"])
    low, high = summary["baseline"]["val_pref_odds_lo"], summary["baseline"]["val_pref_odds_hi"]
    assert f"[{low:.2f},{high:.2f}]" in lines[1]
    prompted = summary["baselines"]["prompted"]
    assert lines[2].split()[0] == "prompted" and lines[2].count("[") == 6
    assert f"{prompted['val_kl']:.3f} [{prompted['val_kl_lo']:.2f}," in lines[2]
    lines = [lines[0], lines[1], *lines[3:]]  # the points below the baselines
    # pref, util and drop on validation, pref and util on test, and kl: each with its interval
    assert all(line.count("[") == 6 for line in lines[2:] if line.split()[1] == "trial")
    assert lines[0].split()[-1] == "kl" and lines[1].split()[-1] == "0"  # unsteered: kl 0
    # Rows numbered as `export --point N` counts them: row N is the N-th point of the front.
    assert [line.split()[0] for line in lines[2:]] == [str(n) for n in range(1, len(lines) - 1)]
    front = summary["extended_front"]
    kinds = ["dense" if r.get("dense") else "trial" for r in front]
    assert [line.split()[1] for line in lines[2:]] == kinds


def test_intervals_are_seeded_bootstraps_that_hold_the_mean(finished):
    tmp_path, summary = finished
    for point in summary["extended_front"]:
        for key in ("pref_odds", "util_odds", "util_drop", "test_pref_odds", "test_util_drop"):
            assert point[f"{key}_lo"] <= point[key] <= point[f"{key}_hi"], key
            assert point[f"{key}_lo"] < point[f"{key}_hi"], key
    baseline = summary["baseline"]
    assert (
        baseline["test_pref_odds_lo"] < baseline["test_pref_odds"] < baseline["test_pref_odds_hi"]
    )
    table = pq.read_table(tmp_path / "runs" / "s1" / "front.parquet")
    assert {"test_util_drop_lo", "pref_odds_hi"} <= set(table.column_names)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    parent = client.get_run(summary["mlflow_parent_run_id"])
    child = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )[0]
    assert {"pref_odds_lo", "test_pref_odds_hi", "util_drop_lo"} <= set(child.data.metrics)


def test_hypervolume_has_one_reference_fixed_before_the_first_trial(finished):
    """Every progress value is the hypervolume of the trials so far against the reference
    recorded with the search (unsteered preference, utility floor below unsteered utility),
    so the history never falls."""
    from steerfront.search.best import front_volume

    tmp_path, summary = finished
    folder = tmp_path / "runs" / "s1"
    state = json.loads((folder / "search.json").read_text())
    floor = state["settings"]["util_floor"]
    base = summary["baseline"]
    reference = [base["val_pref_odds"], base["val_util_odds"] - floor]
    assert summary["hypervolume_reference"] == pytest.approx(reference)
    client = MlflowClient(tracking_uri=f"sqlite:///{folder.parent / 'mlflow.db'}")
    history = client.get_metric_history(summary["mlflow_parent_run_id"], "hypervolume")
    values = [h.value for h in sorted(history, key=lambda h: h.step)]
    done = read_trials(folder)  # in the order they finished
    expected = [front_volume(done[:i], tuple(reference), extended=False) for i in range(1, 5)]
    assert values == pytest.approx(expected)
    assert values == sorted(values) and values[-1] == pytest.approx(summary["hypervolume"])
    params = client.get_run(summary["mlflow_parent_run_id"]).data.params
    assert float(params["util_floor"]) == floor


def _copy_with_baseline(finished, tmp_path, shift):
    """The finished search, copied, with the unsteered model's per-pair test preference moved
    by `shift` (what the verdict's paired gain is measured against)."""
    import shutil

    source, _ = finished
    runs = tmp_path / "runs"
    shutil.copytree(source / "runs" / "s1", runs / "s1")
    path = runs / "s1" / "search.json"
    state = json.loads(path.read_text())
    pairs = state["setup"]["baseline_pref"]["test"]
    state["setup"]["baseline_pref"]["test"] = [value + shift for value in pairs]
    path.write_text(json.dumps(state))
    return str(runs)


def test_best_refuses_a_pick_that_does_not_beat_the_unsteered_model(finished, tmp_path, capsys):
    runs = _copy_with_baseline(finished, tmp_path, 1e9)
    assert main(["best", "s1", "--storage", runs]) == 1
    out = capsys.readouterr().out
    assert "does NOT beat the unsteered model on test preference" in out
    assert "nothing exported (pass --force" in out
    assert not (tmp_path / "runs" / "s1" / "best-max-pref").exists()
    assert main(["best", "s1", "--storage", runs, "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["beats_baseline"] is False and document["exported"] is None
    assert document["gain"]["hi"] < -1e8 and document["gain"]["pairs"] > 1
    best = document["best"]
    assert document["ci"]["test_pref_odds"] == [
        best["test_pref_odds_lo"],
        best["test_pref_odds_hi"],
    ]
    assert main(["best", "s1", "--storage", runs, "--force"]) == 0
    assert (tmp_path / "runs" / "s1" / "best-max-pref" / "best.yaml").is_file()


def test_best_exports_a_pick_that_beats_it_once_per_rule(finished, tmp_path, capsys):
    import os
    import stat

    runs = _copy_with_baseline(finished, tmp_path, -1e9)
    old = os.umask(0o022)
    try:
        assert main(["best", "s1", "--storage", runs, "--json"]) == 0
    finally:
        os.umask(old)
    document = json.loads(capsys.readouterr().out)
    assert document["beats_baseline"] is True
    best = document["best"]
    assert isinstance(best["layer"], int) and best["rank"] is None and best["lr"] == 0.08
    assert best["factors"] is None and best["steps"] == 6
    out = tmp_path / "runs" / "s1" / "best-max-pref"
    assert document["exported"] == str(out)
    for path in [out, *out.iterdir()]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), path
    saved = yaml.safe_load((out / "best.yaml").read_text())
    assert saved["beats_baseline"] is True and saved["search"] == "s1"
    assert saved["concept"] == "agreeableness" and saved["steerfront"] == "0.1.0"
    assert "tiny-llama" in saved["model"]
    status = main(["best", "s1", "--storage", runs])
    assert status == 2 and "holds an earlier export; pass --force" in capsys.readouterr().err
    assert main(["best", "s1", "--storage", runs, "--rule", "knee"]) == 0
    assert (tmp_path / "runs" / "s1" / "best-knee" / "best.yaml").is_file()


def test_generate_with_the_exported_intervention(finished, tiny_model_dir, tmp_path, capsys):
    source, _ = finished
    runs, out = str(source / "runs"), tmp_path / "b"
    assert main(["best", "s1", "--storage", runs, "--out", str(out), "--force"]) == 0
    capsys.readouterr()
    path = out / "intervention.safetensors"
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
        "--dense-m",
        "0",
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0
    trials = pq.read_table(tmp_path / "runs" / "f1" / "trials.parquet").to_pylist()
    failed = [t for t in trials if t["status"] == "failed"]
    assert failed and all(t["form"] == "lora" for t in failed)
    tried = {(t["form"], t["objective"]) for t in trials}
    assert {("lora", "sft"), ("vector", "diffmean")} <= tried  # the first trials cover them
    assert all("injected fault" in t["error"] for t in failed)
    assert summary["failed"] == len(failed)
    assert all(t["form"] == "vector" for t in summary["front"])
    assert all(not t["dense_points"] for t in trials)  # --dense-m 0: the plain front only
    assert summary["extended_front"] == summary["front"]
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
        (["--dense-m", "-1"], "--dense-m must be 0 or more, not -1"),
        (["--cache-gb", "0"], "--cache-gb must be a number of GB above 0, not 0"),
        (["--cache-gb", "-1.5"], "--cache-gb must be a number of GB above 0, not -1.5"),
        (["--cache-gb", "inf"], "--cache-gb must be a number of GB above 0, not inf"),
    ],
)
def test_bad_search_input(tmp_path, tiny_model_dir, capsys, flags, message):
    status = search(tmp_path, tiny_model_dir, *flags)
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1


def test_settings_refuse_an_unknown_dtype():
    from steerfront.errors import SteerfrontError
    from steerfront.search.settings import SearchSettings

    with pytest.raises(SteerfrontError, match=r"^--dtype 'float16': choose from auto, "):
        SearchSettings(name="s", model="m", concept="c", dtype="float16")


def test_export_a_search_point(finished, tiny_model_dir, capsys):
    """`export NAME`: the point `best` picks by default, at its m; `--point N`: the N-th row
    `front` lists; `best` names the command."""
    import gguf

    tmp_path, _ = finished
    runs, folder = str(tmp_path / "runs"), tmp_path / "runs" / "s1"
    argv = ["best", "s1", "--storage", runs, "--out", str(tmp_path / "b"), "--json", "--force"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    best = document["best"]
    status = main(["export", "s1", "--storage", runs, "--to", "gguf"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"point: vector split layer 1 m {best['m']:.3g}")
    if document["beats_baseline"]:
        assert status == 0
    else:  # refused as `best` refuses it (the tiny model's pick), unless --force
        assert status == 1 and lines[1].startswith("verdict: does NOT beat")
        assert lines[-1] == "nothing exported (pass --force to export it anyway)"
        assert not (folder / "export-gguf").exists()
        assert main(["export", "s1", "--storage", runs, "--to", "gguf", "--force"]) == 0
        lines = capsys.readouterr().out.splitlines()
    out = folder / "export-gguf"
    assert lines[1].startswith(f"exported vector at layer 1, m {best['m']:g}, as gguf")
    assert json.loads((out / "easysteer.json").read_text())["scale"] == best["m"]
    (tensor,) = gguf.GGUFReader(out / "control_vector.gguf").tensors
    trained = load_intervention(
        folder / "cache" / best["train_key"], load_model(str(tiny_model_dir))
    )
    np.testing.assert_array_equal(tensor.data, trained.params["v"].numpy())

    assert main(["front", "s1", "--storage", runs, "--json", "--plain"]) == 0
    plain = json.loads(capsys.readouterr().out)["front"]
    out = tmp_path / "point"
    argv = ["export", "s1", "--storage", runs, "--to", "merged", "--force", "--point"]
    argv.append(str(len(plain)))
    assert main([*argv, "--plain", "--out", str(out)]) == 0
    assert f"m {plain[-1]['m']:g}, as merged" in capsys.readouterr().out
    assert main([*argv[:-1], "99", "--plain"]) == 2
    err = capsys.readouterr().err
    assert f"--point 99: the plain front of 's1' has {len(plain)} points" in err

    assert main(["best", "s1", "--storage", runs, "--out", str(tmp_path / "b2"), "--force"]) == 0
    serve = f"to serve it: steerfront export {tmp_path / 'b2' / 'intervention.safetensors'}"
    assert capsys.readouterr().out.splitlines()[-1] == f"{serve} --to gguf or --to merged"
