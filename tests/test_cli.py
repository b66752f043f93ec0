import json
import subprocess
import sys

import pytest
from conftest import BF16_VS_FP32

from steerfront.cli import main


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_datasets_list(capsys):
    status, out, _ = run(capsys, "datasets", "list")
    assert status == 0
    assert "agreeableness" in out and "short answer" in out and "free text" in out


def test_datasets_show(capsys):
    status, out, _ = run(capsys, "datasets", "show", "agreeableness", "-n", "2")
    assert status == 0
    assert out.count("prompt:") == 2 and "agreeableness: " in out


def test_datasets_validate_with_token_lengths(capsys, tmp_path, tiny_model_dir):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"prompt": "q?", "positive": "yes", "negative": "no"}) + "\n")
    status, out, _ = run(capsys, "datasets", "validate", str(path), "--model", str(tiny_model_dir))
    assert status == 0
    assert "ok, 1 pairs, format steerfront" in out
    assert "positive tokens: min 3" in out  # byte-level tokenizer: one token per byte


def test_bad_file_exits_2_with_one_line(capsys, tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"prompt": "q"}\n')
    status, out, err = run(capsys, "datasets", "validate", str(path))
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and f"{path}:1" in err


def test_wrong_flag_is_one_line_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "steerfront.cli", "datasets", "list", "--bogus"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--bogus" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["search", "--trails", "4"], "did you mean --trials?"),
        (["datasets", "list", "--jsn"], "did you mean --json?"),
        (["sweep", "--layr=3"], "did you mean --layer?"),
        (["evaluate", "--n-pairs", "3"], "did you mean --pairs?"),
    ],
)
def test_a_misspelt_flag_names_the_nearest_one_and_the_subcommands_help(capsys, argv, hint):
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert hint in err
    assert (
        f"(see steerfront {' '.join(argv[:-1] if argv[0] == 'datasets' else argv[:1])} --help)"
        in err
    )


def test_an_unknown_word_gets_no_guess(capsys):
    status, _, err = run(capsys, "front", "a", "b")
    assert status == 2 and "unrecognized arguments: b (see steerfront front --help)" in err


def test_evaluate_prints_log_odds(capsys, tiny_model_dir):
    status, out, _ = run(capsys, "evaluate", "--model", str(tiny_model_dir), "--pairs", "3")
    assert status == 0
    assert "pref_odds" in out and "util_odds" in out and out.count("\n") == 5


def test_evaluate_json(capsys, tiny_model_dir):
    status, out, _ = run(
        capsys, "evaluate", "--model", str(tiny_model_dir), "--pairs", "2", "--json"
    )
    result = json.loads(out)
    assert status == 0 and len(result["pairs"]) == 2
    first = result["pairs"][0]
    assert abs(first["pref_odds"] - (first["L_n"] - first["L_p"])) < 1e-9


def test_evaluate_in_bf16_is_close_to_fp32_and_says_so(capsys, tiny_model_dir):
    flags = ("evaluate", "--model", str(tiny_model_dir), "--pairs", "3", "--json")
    fp32 = json.loads(run(capsys, *flags, "--dtype", "float32")[1])
    bf16 = json.loads(run(capsys, *flags, "--dtype", "bfloat16")[1])
    assert (fp32["dtype"], bf16["dtype"]) == ("float32", "bfloat16")
    assert json.loads(run(capsys, *flags)[1])["dtype"] == "float32"  # auto, on a CPU
    for ours, want in zip(bf16["pairs"], fp32["pairs"], strict=True):
        assert ours["L_p"] != want["L_p"]  # bf16 did run
        assert abs(ours["pref_odds"] - want["pref_odds"]) < BF16_VS_FP32
        assert abs(ours["util_odds"] - want["util_odds"]) < BF16_VS_FP32


def test_bad_dtype_is_argparses_one_line(capsys):
    status, out, err = run(capsys, "evaluate", "--dtype", "float16")
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "--dtype" in err and "'float16'" in err


def test_evaluate_end_of_turn_scores_the_answer_with_its_end(capsys, tiny_model_dir):
    from steerfront.data import encode_pairs, load_concept
    from steerfront.lm import load_model
    from steerfront.scoring.evaluate import evaluate

    flags = ("evaluate", "--model", str(tiny_model_dir), "--pairs", "2", "--json")
    plain = json.loads(run(capsys, *flags)[1])
    ended = json.loads(run(capsys, *flags, "--end-of-turn")[1])
    lm = load_model(str(tiny_model_dir))
    encoded = encode_pairs(lm.tokenizer, load_concept("agreeableness"), end_of_turn=True)[:2]
    expected = evaluate(lm, encoded, None, 0.0).l_p
    assert [p["L_p"] for p in ended["pairs"]] == pytest.approx(expected.tolist(), abs=1e-5)
    assert all(e["L_p"] > p["L_p"] for e, p in zip(ended["pairs"], plain["pairs"], strict=True))


@pytest.fixture(scope="module")
def saved_vector(tiny_model_dir, tmp_path_factory):
    """A vector intervention for the tiny model, saved as a steered search exports one."""
    from steerfront.lm import load_model
    from steerfront.methods import init_intervention
    from steerfront.methods.io import save_intervention

    lm = load_model(str(tiny_model_dir))
    intervention = init_intervention("vector", lm, 1, meta={"m": 2.5})
    intervention.params["v"] += 1.0
    return save_intervention(intervention, tmp_path_factory.mktemp("iv") / "iv", lm)


def test_generate_answers_every_prompt_unsteered_once_and_at_every_m(
    capsys, tmp_path, saved_vector
):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "third"}\n\n{"instruction": "fourth"}\n')
    argv = [
        "generate",
        "first",
        "second",
        "--prompts",
        str(prompts),
        "--m",
        "1,2,4",
        "--max-new-tokens",
        "8",
    ]
    status, out, _ = run(capsys, *argv, "--intervention", str(saved_vector), "--json")
    assert status == 0
    result = json.loads(out)
    assert [p["prompt"] for p in result["prompts"]] == ["first", "second", "third", "fourth"]
    for answer in result["prompts"]:
        assert isinstance(answer["unsteered"], str)
        assert [s["m"] for s in answer["steered"]] == [1.0, 2.0, 4.0]
    assert (result["form"], result["layer"], result["temperature"]) == ("vector", 1, 0.0)
    # The sidecar names the intervention as well; the table shows the same answers.
    sidecar = saved_vector.with_suffix(".json")
    status, out, _ = run(capsys, *argv, "--intervention", str(sidecar))
    assert status == 0
    assert out.count("unsteered:\n") == 4 and out.count("steered (vector at layer 1, m = ") == 12
    first = result["prompts"][0]
    assert f"prompt: first\n\nunsteered:\n{first['unsteered']}\n" in out
    assert f"m = 4):\n{first['steered'][2]['text']}\n" in out


def test_generate_defaults_to_the_saved_m_and_reads_a_text_file(capsys, tmp_path, saved_vector):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n\n two \n")
    argv = ["generate", "--prompts", str(prompts), "--intervention", str(saved_vector), "--json"]
    argv += ["--max-new-tokens", "4"]
    result = json.loads(run(capsys, *argv)[1])
    assert [p["prompt"] for p in result["prompts"]] == ["one", "two"]
    assert [s["m"] for s in result["prompts"][0]["steered"]] == [2.5]


def test_generate_refuses_another_model_and_a_bad_m(capsys, tmp_path, saved_vector):
    other = tmp_path / "other"
    other.mkdir()
    argv = ["generate", "hi", "--intervention", str(saved_vector)]
    status, out, err = run(capsys, *argv, "--model", str(other))
    assert status == 2 and out == "" and err.count("\n") == 1
    assert f"--model {other}: {saved_vector} was made for model " in err
    status, _, err = run(capsys, *argv, "--m", "1,inf")
    assert status == 2 and "--m: m must be finite, not inf" in err


def test_evaluate_an_intervention_beside_the_unsteered_model(capsys, saved_vector, tiny_model_dir):
    flags = ("evaluate", "--pairs", "4", "--json")
    status, out, _ = run(capsys, *flags, "--intervention", str(saved_vector), "--m", "2,1")
    assert status == 0
    result = json.loads(out)
    assert result["model"] == str(tiny_model_dir)  # the intervention's, by default
    assert (result["form"], result["layer"], result["pairs"]) == ("vector", 1, 4)
    assert (result["per_token"], result["end_of_turn"]) == (False, False)
    rows = {row["m"]: row for row in result["rows"]}
    assert list(rows) == [0.0, 1.0, 2.0]
    assert (result["split"], result["split_seed"]) == ("test", 0)  # the default with one
    plain = json.loads(run(capsys, *flags, "--model", str(tiny_model_dir), "--split", "test")[1])
    assert rows[0.0]["pref_odds"] == pytest.approx(plain["pref_odds"], abs=1e-5)
    assert rows[0.0]["util_drop"] == 0.0
    drop = plain["util_odds"] - rows[2.0]["util_odds"]
    assert rows[2.0]["util_drop"] == pytest.approx(drop, abs=1e-5)
    assert rows[2.0]["pref_odds"] != rows[0.0]["pref_odds"]
    assert rows[0.0]["kl"] == 0.0 and rows[2.0]["kl"] > 0  # kl from the unsteered model
    assert rows[2.0]["kl_lo"] <= rows[2.0]["kl"] <= rows[2.0]["kl_hi"]
    status, out, _ = run(capsys, *flags[:-1], "--intervention", str(saved_vector))
    assert status == 0 and out.splitlines()[0].split() == [
        "m", "pref_odds", "±", "se", "util_odds", "±", "se", "util_drop", "accuracy", "kl"
    ]  # fmt: skip
    assert [line.split()[0] for line in out.splitlines()[1:3]] == ["0.000", "2.500"]  # saved m
    assert "(4 of 28 test pairs: search split, seed 0), vector at layer 1; m = 0 is the " in out


def test_evaluate_refuses_m_alone_and_another_model(capsys, tmp_path, saved_vector):
    status, out, err = run(capsys, "evaluate", "--m", "1")
    assert status == 2 and out == "" and "--m needs --intervention" in err
    argv = ["evaluate", "--intervention", str(saved_vector), "--model", "smollm2-135m-instruct"]
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert "was made for model" in err and "leave out --model" in err


def test_evaluate_per_token_divides_each_nll_by_its_length(capsys, tiny_model_dir):
    from steerfront.data import encode_pairs, load_concept
    from steerfront.lm import load_model

    flags = ("evaluate", "--model", str(tiny_model_dir), "--concept", "sentiment", "--json")
    summed = json.loads(run(capsys, *flags, "--pairs", "3")[1])
    mean = json.loads(run(capsys, *flags, "--pairs", "3", "--per-token")[1])
    assert (summed["per_token"], mean["per_token"]) == (False, True)
    encoded = encode_pairs(load_model(str(tiny_model_dir)).tokenizer, load_concept("sentiment"))
    for s, m, e in zip(summed["pairs"], mean["pairs"], encoded, strict=False):
        assert m["L_p"] == pytest.approx(s["L_p"] / len(e.positive), rel=1e-5)
        assert m["L_n"] == pytest.approx(s["L_n"] / len(e.negative), rel=1e-5)


def test_datasets_validate_warns_on_stderr_and_exits_0(capsys, tmp_path):
    path = tmp_path / "c.jsonl"
    pair = {"prompt": "q?", "positive": "a much longer answer", "negative": "no"}
    path.write_text(json.dumps(pair) + "\n")
    status, out, err = run(capsys, "datasets", "validate", str(path))
    assert status == 0 and out.startswith(f"{path}: ok, 1 pairs")
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"warning: {path}: ") for line in lines)
    assert "10.00x as long" in lines[0] and "leave 0 test pairs" in lines[1]


def test_cache_lists_and_clears_models_and_kernel_choices(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path))
    model = tmp_path / "models" / "smollm2-135m-instruct-0123456789abcdef"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"x" * 1500)
    (model / "source.json").write_text(json.dumps({"sha256": "0123456789abcdef" * 4}))
    (tmp_path / "models" / ".smollm2.half-done").mkdir()  # an interrupted conversion
    (tmp_path / "kernels").mkdir()
    kernel = {"cpu": "Some CPU", "torch": "2.13.0", "kernel": "onednn"}
    kernel["shapes"] = [[16, 32], [32, 32], [64, 32], [32, 64]]  # a model of width 32
    (tmp_path / "kernels" / "abc.json").write_text(json.dumps(kernel))
    (tmp_path / "storage" / "s3-runs").mkdir(parents=True)
    (tmp_path / "storage" / "s3-runs" / "trials.parquet").write_bytes(b"y" * 10)
    listed = json.loads(run(capsys, "cache", "list", "--json")[1])
    assert listed["cache"] == str(tmp_path) and listed["storage_bytes"] == 10
    (entry,) = listed["models"]
    assert entry["name"] == model.name and entry["sha256"].startswith("0123456789abcdef")
    assert entry["bytes"] > 1500
    size = len(json.dumps(kernel))
    kernel.pop("shapes")
    assert listed["kernels"] == [{"name": "abc", "bytes": size, **kernel, "width": 32}]
    status, out, _ = run(capsys, "cache", "list")
    assert status == 0 and "models: 1, 1.58 kB" in out and "GGUF sha256 0123456789abcdef" in out
    assert "abc              onednn  models of width 32, Some CPU, torch 2.13.0" in out
    status, out, _ = run(capsys, "cache", "clear", "--kernels")
    assert status == 0 and out == f"removed 1 kernels ({size} B) from {tmp_path}\n"
    assert not (tmp_path / "kernels").exists() and model.is_dir()
    status, out, _ = run(capsys, "cache", "clear")
    assert status == 0 and out.startswith("removed 1 models (1.58 kB) and 0 kernels (0 B)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["storage"]
    assert json.loads(run(capsys, "cache", "list", "--json")[1])["models"] == []
