"""Judged generations end to end on a tiny model: `search --judge local` (the driver loads no
model), `judge` again (nothing generated twice), the files, MLflow, `best --rule judged`, the
llm judge through a real llama.cpp server, and bad input."""

import contextlib
import io
import json
import time

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import free_port, start_llama_server, stop_server
from mlflow.tracking import MlflowClient
from test_search import refuse_models

from steerfront.cli import main
from steerfront.data import load_concept
from steerfront.scoring.judge.rubrics import load_rubric
from steerfront.search.best import pick


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def judged(tmp_path_factory, talking_model_dir):
    """A 4-trial search (one training, four values of m) judged by the local judge when it
    ends: two front points and the unsteered model, the concept's test prompts."""
    tmp_path = tmp_path_factory.mktemp("judged")
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {"forms": ["vector"], "objectives": ["diffmean"], "layers": [1], "m": [0.0, 8.0]}
        )
    )
    runs = str(tmp_path / "runs")
    with pytest.MonkeyPatch.context() as patch:
        loads = refuse_models(patch)
        status, out, err = run(
            "search", "--model", str(talking_model_dir), "--storage", runs, "--space", str(space),
            "--trials", "4", "--name", "j1", "--concurrency", "1", "--dtype", "float32",
            "--judge", "local", "--judge-points", "2", "--max-new-tokens", "6", "--json",
        )  # fmt: skip
    assert status == 0 and loads == [], err[-2000:]
    return tmp_path, json.loads(out.strip().splitlines()[-1]), err


def front_of(tmp_path):
    from steerfront.search.best import read_front

    return read_front(tmp_path / "runs" / "j1")


def test_search_json_carries_the_judged_points_and_agreement(judged):
    tmp_path, summary, err = judged
    assert summary["judge"] == "local"
    points = summary["judged"]
    front = front_of(tmp_path)
    n = len(points) - 2  # the spread's two points, and the search's own pick when not among them
    assert [p["point"] for p in points] == [0, -1, *range(1, n + 1)] and n in (2, 3)
    searched = pick(front)
    assert (searched["trial_id"], searched["m"]) in {(p["trial_id"], p["m"]) for p in points[2:]}
    assert points[2]["m"] == front[0]["m"] and points[2]["on_front"]  # one on the front,
    assert not points[3]["on_front"]  # one off it (--judge-points 2)
    assert (points[3]["trial_id"], points[3]["m"]) not in {(r["trial_id"], r["m"]) for r in front}
    assert points[0]["form"] is None and points[0]["asked"] is None  # the unsteered model
    prompted = summary["baselines"]["prompted"]  # the prompted model, as the search scored it
    assert points[1]["form"] is None and points[1]["asked"] == prompted["instruction"]
    assert (points[1]["pref_odds"], points[1]["kl"]) == (prompted["val_pref_odds"],
                                                         prompted["val_kl"])  # fmt: skip
    for p in points:
        assert {"m", "pref_odds", "util_odds", "concept", "fluency", "instruction"} <= set(p)
        assert 0 <= p["concept"] <= 1 and 0 <= p["fluency"] <= 1
    assert set(summary["agreement"]) == {"pref_concept", "util_fluency"}
    for entry in summary["agreement"].values():  # under 8 points: no coefficient; no prompting
        assert entry == {"rho": None, "lo": None, "hi": None, "points": n + 1}
    assert 0 <= summary["probe_accuracy"] <= 1
    assert summary["probe"]["on"] == "generations" and summary["probe"]["held_out"] > 0
    assert f"judge local: {n} points and the unsteered and prompted models" in err


def test_results_files(judged):
    tmp_path, summary, _ = judged
    folder = tmp_path / "runs" / "j1" / "judge"
    generations = pq.read_table(folder / "generations.parquet").to_pylist()
    prompts = {g["prompt"] for g in generations}
    n = len(summary["judged"])
    assert len(generations) == n * len(prompts) and len(prompts) > 5
    assert all(g["text"] and g["concept"] is not None for g in generations)
    row = generations[-1]
    assert {"point", "form", "objective", "layer", "m", "prompt", "sample", "text", "judge",
            "concept", "fluency", "instruction", "nll", "repetition"} <= set(row)  # fmt: skip
    judged_rows = pq.read_table(folder / "judged.parquet").to_pylist()
    assert [r["point"] for r in judged_rows] == [0, -1, *range(1, n - 1)]
    # The prompted model answers with the instruction in the prompt, judged on the plain one.
    asked = {g["asked"] for g in generations if g["point"] == -1}
    assert asked == {summary["baselines"]["prompted"]["instruction"]}
    assert {g["prompt"] for g in generations if g["point"] == -1} == prompts
    assert not any(g["asked"] for g in generations if g["point"] != -1)
    assert {"pref_odds", "util_odds", "concept", "concept_se", "fluency_se", "n"} <= set(
        judged_rows[1]
    )
    assert (folder / "judged.png").read_bytes()[:4] == b"\x89PNG"
    train = {p.prompt for p in load_concept("agreeableness").split(0.2, 0.2, 0).train}
    assert not prompts & train  # test prompts only


def parent_run(tmp_path):
    """The MLflow client of the search's store, and its parent run's id."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("steerfront").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.`steerfront.search` = 'j1'")
    return client, runs[0].info.run_id


def generations_table(client, parent):
    with open(client.download_artifacts(parent, "judge/generations.json")) as handle:
        return json.load(handle)


def test_mlflow_gets_judge_metrics_and_the_generations_table(judged):
    tmp_path, summary, _ = judged
    client, parent = parent_run(tmp_path)
    metrics = client.get_run(parent).data.metrics
    assert "judge_unsteered_concept" in metrics and "judge_unsteered_fluency" in metrics
    assert "judge_prompted_concept" in metrics and "judge_prompted_fluency" in metrics
    for key, value in summary["agreement"].items():
        assert metrics[f"judge_agreement_{key}_points"] == value["points"]
        assert f"judge_agreement_{key}" not in metrics  # no bare coefficient below 8 points
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
    )
    judged_children = [c for c in children if "judge_concept" in c.data.metrics]
    assert len(judged_children) == len(summary["judged"]) - 2  # the baselines are on the parent
    artifacts = {a.path for a in client.list_artifacts(parent, "judge")}
    assert {"judge/generations.json", "judge/judged.parquet", "judge/judged.png"} <= artifacts
    table = generations_table(client, parent)
    prompts = {r[table["columns"].index("prompt")] for r in table["data"]}
    assert "text" in table["columns"]
    assert len(table["data"]) == len(summary["judged"]) * len(prompts)


def test_judging_again_generates_nothing_and_logs_no_duplicate(judged):
    tmp_path, summary, _ = judged
    runs = str(tmp_path / "runs")
    status, out, err = run("judge", "j1", "--storage", runs, "--judge-points", "2",
                           "--max-new-tokens", "6", "--json")  # fmt: skip
    assert status == 0, err
    assert "0 generations to make" in err
    again = json.loads(out.strip().splitlines()[-1])
    assert again["judged"] == summary["judged"]
    client, parent = parent_run(tmp_path)
    table = generations_table(client, parent)  # replaced, not appended to
    rows = pq.read_table(tmp_path / "runs" / "j1" / "judge" / "generations.parquet").num_rows
    assert len(table["data"]) == rows


def test_judging_with_other_settings_is_refused_unless_forced(judged):
    """A pass with other settings never replaces the earlier one without a word: refused (the
    settings that differ named, every file kept), or replaced with --force, saying so."""
    tmp_path, summary, _ = judged
    runs = str(tmp_path / "runs")
    folder = tmp_path / "runs" / "j1" / "judge"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    other = ["judge", "j1", "--storage", runs, "--judge-points", "2", "--max-new-tokens", "5"]
    status, out, err = run(*other)
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert f"{folder}/ holds a judge pass made with other settings" in err
    assert "(max_new_tokens 6, not 5); pass --force to replace it" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    status, out, err = run(*other, "--force", "--json")
    assert status == 0, err
    assert f"judge: replacing the earlier pass in {folder}/ (max_new_tokens 6, not 5)" in err
    rows = pq.read_table(folder / "generations.parquet").to_pylist()
    assert {r["max_new_tokens"] for r in rows} == {5}
    assert json.loads((folder / "judge.json").read_text())["settings"]["max_new_tokens"] == 5
    status, _, err = run(*other)  # the same settings again: reused, not refused
    assert status == 0 and "0 generations to make" in err


def test_best_rule_judged_picks_by_concept_within_fluency(judged):
    tmp_path, _, _ = judged
    runs = str(tmp_path / "runs")
    status, out, err = run("best", "j1", "--storage", runs, "--rule", "judged",
                           "--max-fluency-drop", "1", "--force", "--json")  # fmt: skip
    assert status == 0, err
    best = json.loads(out)["best"]
    rows = pq.read_table(tmp_path / "runs" / "j1" / "judge" / "judged.parquet").to_pylist()
    within = [r for r in rows if r["point"] > 0 and r["kl"] is not None and r["kl"] <= 0.05]
    assert within and best["concept"] == max(r["concept"] for r in within)  # the default budget
    assert (tmp_path / "runs" / "j1" / "best-judged" / "best.yaml").is_file()
    status, _, err = run("best", "j1", "--storage", runs, "--rule", "judged",
                         "--max-fluency-drop", "-5", "--out", str(tmp_path / "none"))  # fmt: skip
    assert status == 2 and "raise --max-fluency-drop" in err and err.count("\n") == 1


def test_judge_gives_the_verdict_best_gives_for_its_pick(judged):
    tmp_path, _, _ = judged
    runs = str(tmp_path / "runs")
    status, out, err = run("judge", "j1", "--storage", runs, "--judge-points", "2",
                           "--max-new-tokens", "6", "--force", "--json")  # fmt: skip
    assert status == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    shown = summary["examples"]
    assert shown["picked"] is not None, shown.get("why")
    rule = shown["rule"] if shown["rule"] == "judged" else "max-pref"
    status, out, err = run("best", "j1", "--storage", runs, "--rule", rule,
                           "--out", str(tmp_path / f"verdict-{rule}"), "--json")  # fmt: skip
    assert status in (0, 1), err
    best = json.loads(out)
    assert best["best"]["m"] == shown["picked"]["m"]
    for key in ("beats_baseline", "gain", "util_gain", "utility"):
        assert summary["verdict"][key] == best[key], key
    assert status == (0 if best["beats_baseline"] else 1)


def test_chosen_points_by_trial_id_and_file(judged):
    tmp_path, summary, _ = judged
    runs = str(tmp_path / "runs")
    trials = pq.read_table(tmp_path / "runs" / "j1" / "trials.parquet").to_pylist()
    dense = trials[0]["dense_points"][0]
    points = tmp_path / "points.jsonl"
    points.write_text(json.dumps({"trial_id": trials[0]["trial_id"], "m": dense["m"]}) + "\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "Say hi."}\n\n{"prompt": "Count to three."}\n')
    ids = ",".join(t["trial_id"] for t in trials[1:])
    for spec, ms in ((str(points), [dense["m"]]), (ids, [t["m"] for t in trials[1:]])):
        status, out, err = run("judge", "j1", "--storage", runs, "--points", spec, "--prompts",
                               str(prompts), "--max-new-tokens", "4", "--json",
                               "--force")  # fmt: skip
        assert status == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert [p["m"] for p in result["judged"]] == [0.0, 0.0, *ms]  # the baselines first
        assert all(p["n"] == 2 for p in result["judged"])
    assert all(v["rho"] is None for v in result["agreement"].values())  # 3 points: too few


def test_a_search_made_before_the_prompted_baseline_is_judged_without_it(judged):
    """Its search.json has no prompted scores: no point -1, and its baselines say so."""
    from steerfront.search.best import baselines
    from steerfront.search.judge_points import select_points
    from steerfront.search.judge_settings import JudgeSettings
    from steerfront.search.trial import SearchSetup

    folder = judged[0] / "runs" / "j1"
    setup = json.loads((folder / "search.json").read_text())["setup"]
    old = {k: v for k, v in setup.items() if k not in ("prompted", "prompted_pref")}
    points = select_points(folder, SearchSetup(**old), JudgeSettings(points=2))
    assert [p["point"] for p in points][:2] == [0, 1]
    assert baselines(old) == {"unsteered": setup["baseline"], "prompted": None}


def test_the_pass_scores_as_one_local_judge_in_one_process(judged, talking_model_dir):
    """The pass shares its texts among two workers and fits the probe where their readings
    meet: every score equals that of one LocalJudge here, on the same texts and the pass's
    own probe examples."""
    import torch

    from steerfront.lm import load_model
    from steerfront.scoring.judge.local import SCORES, LocalJudge

    folder = judged[0] / "runs" / "j1" / "judge"
    rows = pq.read_table(folder / "generations.parquet").to_pylist()
    examples = pq.read_table(folder / "probe_examples.parquet").to_pylist()
    assert len({r["train_key"] for r in rows}) >= 2  # texts of more than one job
    lm = load_model(str(talking_model_dir), device="cpu", dtype=torch.float32)
    train = load_concept("agreeableness").split(0.2, 0.2, 0).train
    judge = LocalJudge(lm, train, 0, examples)
    here = judge.score([(r["prompt"], r["text"]) for r in rows])
    for row, score in zip(rows, here, strict=True):
        assert row["probe_accuracy"] == judge.probe.accuracy
        for key in SCORES:
            assert row[key] == pytest.approx(score[key], abs=1e-4), key


def test_jobs_group_rows_by_intervention_and_sample_and_cost_what_they_do():
    """A job per trained intervention and sample; a kept text is read, not generated again;
    the llm judge has nothing to do for kept texts and no probe."""
    from steerfront.search.judge_settings import JudgeSettings
    from steerfront.search.judged import READ_TOKENS, _jobs

    rows = [
        {"train_key": None, "sample": 0, "text": None},
        {"train_key": "a", "sample": 0, "text": None},
        {"train_key": "a", "sample": 0, "text": "kept"},
        {"train_key": "a", "sample": 1, "text": None},
        {"train_key": "b", "sample": 0, "text": "kept"},
    ]
    local = JudgeSettings(max_new_tokens=80)
    jobs, sizes = _jobs(rows, local, None, "sentiment", train_pairs=10)
    made = 80 / READ_TOKENS
    assert [j.get("rows") for j in jobs] == [[0], [1, 2], [3], [4], None]
    assert sizes[:4] == [made + 1, made + 2, made + 1, 1]
    assert jobs[-1] == {"concept": "sentiment", "labelled": None}
    assert sizes[-1] == 48 * 48 / READ_TOKENS + (20 + 48) / 4
    labelled = [{"prompt": "p", "polarity": "+", "text": "t"}]
    assert _jobs(rows, local, labelled, "sentiment", 10)[1][-1] == (20 + 48) / 4
    llm_jobs, llm_sizes = _jobs(rows, JudgeSettings(judge="llm", max_new_tokens=80), None, "x", 10)
    assert [j["rows"] for j in llm_jobs] == [[0], [1], [3]]
    assert llm_sizes == [made] * 3


def bad(tmp_path, *flags):
    started = time.monotonic()
    status, out, err = run("judge", "j1", "--storage", str(tmp_path / "runs"), *flags)
    return status, err, time.monotonic() - started


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--judge-points", "0"], "--judge-points must be at least 1, not 0"),
        (["--samples", "0"], "--samples must be at least 1"),
        (["--temperature", "-1"], "--temperature must be 0 or more"),
        (["--prompts", "{tmp}/prompts.jsonl"], "prompts.jsonl:2: expected an object"),
        (["--prompts", "{tmp}/missing.jsonl"], "--prompts {tmp}/missing.jsonl: not readable"),
        (["--points", "{tmp}/points.jsonl"], 'points.jsonl:1: expected {"trial_id"'),
        (["--points", "nosuchtrial"], "--points: no finished trial 'nosuchtrial'"),
        (["--judge", "llm", "--rubric", "kindness"], "--rubric kindness: not a built-in rubric"),
        (["--judge", "llm", "--rubric", "{tmp}/rubric.yaml"], "lacks the {generation}"),
        (["--judge", "llm", "--judge-url", "http://127.0.0.1:{port}/v1"], "is unreachable"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(judged, flags, message):
    tmp_path = judged[0]
    (tmp_path / "prompts.jsonl").write_text('{"instruction": "ok"}\n{"text": "no"}\n')
    (tmp_path / "points.jsonl").write_text('{"m": 1}\n')
    (tmp_path / "rubric.yaml").write_text(
        yaml.safe_dump({"parse": "rating", "scale": [0, 2], "questions": {"c": "{prompt}"}})
    )
    port = free_port()
    flags = [f.format(tmp=tmp_path, port=port) for f in flags]
    before = sorted(p.name for p in (tmp_path / "runs" / "j1" / "judge").iterdir())
    stamp = (tmp_path / "runs" / "j1" / "judge" / "generations.parquet").stat().st_mtime_ns
    status, err, seconds = bad(tmp_path, *flags)
    assert status == 2 and err.count("\n") == 1, err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert seconds < 15
    assert sorted(p.name for p in (tmp_path / "runs" / "j1" / "judge").iterdir()) == before
    assert (tmp_path / "runs" / "j1" / "judge" / "generations.parquet").stat().st_mtime_ns == stamp


def test_llm_judge_pass_through_a_real_server(judged, tmp_path):
    """The axbench questions (short answers) to llama.cpp's server: every answer kept, the
    unparsable ones counted, a wrong model name refused before any generation."""
    runs = str(judged[0] / "runs")
    source = load_rubric("axbench")
    rubric = tmp_path / "short.yaml"
    rubric.write_text(yaml.safe_dump({"parse": "rating", "scale": [0, 2], "combine": "harmonic",
        "max_tokens": 16, "temperature": 0, "questions": source.questions}))  # fmt: skip
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "Say hi."}\n')
    port = free_port()
    server = start_llama_server(port, alias="judge")
    try:
        common = [
            "--judge", "llm", "--judge-url", f"http://127.0.0.1:{port}/v1", "--judge-key-env",
            "STEERFRONT_NO_KEY", "--rubric", str(rubric), "--prompts", str(prompts),
            "--judge-points", "1", "--max-new-tokens", "4",
        ]  # fmt: skip
        status, err, seconds = bad(judged[0], *common, "--judge-model", "gpt-4o")
        assert status == 2 and "judge model 'gpt-4o' is not served" in err and seconds < 15
        status, out, err = run("judge", "j1", "--storage", runs, *common, "--judge-model",
                               "judge", "--json", "--force")  # fmt: skip
        assert status == 0, err
    finally:
        stop_server(server)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["judge"] == "llm:short:judge"
    assert {"concept", "instruction", "fluency", "harmonic"} <= set(result["judged"][0])
    rows = pq.read_table(judged[0] / "runs" / "j1" / "judge" / "generations.parquet").to_pylist()
    # one prompt: the baselines, the point spread along the front and the search's pick
    assert len(rows) == len(result["judged"]) <= 4 and all(r["fluency_answer"] for r in rows)
    unparsed = sum(r[q] is None for r in rows for q in ("concept", "instruction", "fluency"))
    assert result["unparsed"] == unparsed


def test_search_resume_finishes_a_judge_pass_that_was_cut_off(judged):
    """As if the pass stopped after generating a few texts: `search --resume` judges the
    search's recorded pass again, generating only what is missing."""
    tmp_path = judged[0]
    folder = tmp_path / "runs" / "j1" / "judge"
    recorded = ["--judge-points", "2", "--max-new-tokens", "6"]  # the search's own pass
    assert run("judge", "j1", "--storage", str(tmp_path / "runs"), *recorded, "--force")[0] == 0
    rows = pq.read_table(folder / "generations.parquet").to_pylist()
    kept = rows[:5]
    pq.write_table(pq.read_table(folder / "generations.parquet").slice(0, 5), folder / "g.parquet")
    (folder / "g.parquet").replace(folder / "generations.parquet")
    (folder / "judged.parquet").unlink()
    status, out, err = run("search", "--resume", "j1", "--storage", str(tmp_path / "runs"),
                           "--json")  # fmt: skip
    assert status == 0, err[-2000:]
    assert f"{len(rows) - 5} generations to make, 5 kept" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["trials"] == 4 and summary["judged"] == judged[1]["judged"]
    again = pq.read_table(folder / "generations.parquet").to_pylist()
    assert [r["text"] for r in again[:5]] == [r["text"] for r in kept]
    assert (folder / "judged.parquet").is_file()
