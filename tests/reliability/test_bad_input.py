"""Malformed input of every kind: one line naming what is wrong and where, exit status 2, no
traceback, nothing written."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from steerfront.cli import main

MWE = {"question": "q?", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"}


def jsonl(*records):
    return "".join(json.dumps(r) + "\n" for r in records)


# name: (files to write {name: text}, argv after "steerfront", expected fragment)
CASES = {
    # concept files
    "missing file": ({}, ["datasets", "validate", "{tmp}/none.jsonl"], "none.jsonl: no such file"),
    "unknown extension": (
        {"c.csv": "a,b\n"},
        ["datasets", "validate", "{tmp}/c.csv"],
        "unknown format",
    ),
    "invalid json line": (
        {"c.jsonl": jsonl(MWE) + "{x\n"},
        ["datasets", "validate", "{tmp}/c.jsonl"],
        "c.jsonl:2: invalid JSON",
    ),
    "missing field": (
        {"c.jsonl": jsonl({"question": "q", "answer_matching_behavior": "a"})},
        ["datasets", "validate", "{tmp}/c.jsonl"],
        "unknown format",
    ),
    "missing field, explicit format": (
        {"c.jsonl": jsonl({"question": "q", "answer_matching_behavior": "a"})},
        ["datasets", "validate", "{tmp}/c.jsonl", "--format", "mwe"],
        "c.jsonl:1: field 'answer_not_matching_behavior' is missing",
    ),
    "empty field": (
        {"c.jsonl": jsonl({**MWE, "question": ""})},
        ["datasets", "validate", "{tmp}/c.jsonl"],
        "c.jsonl:1: field 'question' is empty",
    ),
    "identical completions": (
        {"c.jsonl": jsonl({**MWE, "answer_not_matching_behavior": " Yes"})},
        ["datasets", "validate", "{tmp}/c.jsonl"],
        "are identical",
    ),
    "non-string field": (
        {"c.jsonl": jsonl({"prompt": "q", "positive": 1, "negative": "n"})},
        ["datasets", "validate", "{tmp}/c.jsonl"],
        "'positive' must be a string",
    ),
    "empty dataset": (
        {"c.jsonl": "\n"},
        ["datasets", "validate", "{tmp}/c.jsonl"],
        "empty dataset",
    ),
    "json not a list": (
        {"c.json": "{}"},
        ["datasets", "validate", "{tmp}/c.json"],
        "expected a JSON list",
    ),
    "broken parquet": (
        {"c.parquet": "nope"},
        ["datasets", "validate", "{tmp}/c.parquet"],
        "not a readable parquet file",
    ),
    "unknown concept": (
        {},
        ["sweep", "--concept", "nosuch", "--out", "{tmp}/out"],
        "concept 'nosuch'",
    ),
    # search-space YAML
    "space: unknown key": (
        {"s.yaml": "forms: [vector]\nlayerz: [1]\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "layerz: unknown key",
    ),
    "space: invalid yaml": (
        {"s.yaml": "forms: [vector\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "s.yaml:2: invalid YAML",
    ),
    "space: not a mapping": (
        {"s.yaml": "- vector\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "expected a mapping",
    ),
    "space: empty forms": (
        {"s.yaml": "forms: []\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "forms: must not be empty",
    ),
    "space: unknown form": (
        {"s.yaml": "forms: [blend]\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "forms: unknown form 'blend'",
    ),
    "space: empty m range": (
        {"s.yaml": "m: [3, 1]\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "range for vector is empty",
    ),
    "space: empty gamma range": (
        {"s.yaml": "gamma: [9, 1]\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "gamma: range is empty",
    ),
    "space: rank 0": (
        {"s.yaml": "rank: [0, 4]\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "rank: values must be at least 1",
    ),
    "space: diffmean alone for lora": (
        {"s.yaml": "forms: [lora]\nobjectives: [diffmean]\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "diffmean alone",
    ),
    "space: layers outside the model": (
        {"s.yaml": "layers: [1, 12]\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "layers [12] are outside the model",
    ),
    "space: rank too large": (
        {"s.yaml": "forms: [lora]\nrank: [4096]\n"},
        ["search", "--space", "{tmp}/s.yaml"],
        "rank 4096 is larger",
    ),
    "space: missing file": (
        {},
        ["search", "--space", "{tmp}/none.yaml"],
        "none.yaml: no such file",
    ),
    # flags
    "unknown flag": ({}, ["search", "--bogus"], "unrecognized arguments: --bogus"),
    "unknown command": ({}, ["serach"], "invalid choice: 'serach'"),
    "trials 0": ({}, ["search", "--trials", "0"], "--trials must be at least 1"),
    "bad sampler": ({}, ["search", "--sampler", "grid"], "invalid choice: 'grid'"),
    "bad address": ({}, ["search", "--address", "nohost"], "expected HOST:PORT"),
    "object store without a tracking server": (
        {},
        ["search", "--storage", "s3://bucket/runs"],
        "cannot live in an object store; give --tracking-uri",
    ),
    "unknown storage scheme": (
        {},
        ["search", "--storage", "nosuch://bucket/runs", "--tracking-uri", "sqlite:///{tmp}/m.db"],
        "storage nosuch://bucket/runs: ",
    ),
    "bad m grid": (
        {},
        ["sweep", "--m", "1,x", "--out", "{tmp}/out"],
        "expected comma-separated numbers",
    ),
    "layer out of range": (
        {},
        ["sweep", "--layer", "99", "--out", "{tmp}/out"],
        "layer 99 is out of range",
    ),
    "bad test fraction": (
        {},
        ["sweep", "--test-fraction", "2", "--out", "{tmp}/out"],
        "--test-fraction must be between 0 and 1",
    ),
    "resume unknown": ({}, ["search", "--resume", "ghost"], "no search named 'ghost'"),
    "front of no search": ({}, ["front", "ghost"], "search 'ghost': no trials.parquet"),
    # intervention files
    "intervention missing": (
        {},
        ["generate", "--intervention", "{tmp}/none.safetensors", "hi"],
        "{tmp}/none.safetensors: no such file",
    ),
    # generate's prompts and settings
    "prompts: invalid json line": (
        {"p.jsonl": jsonl({"prompt": "a"}) + "{x\n"},
        ["generate", "--intervention", "{tmp}/iv.json", "--prompts", "{tmp}/p.jsonl"],
        "p.jsonl:2: invalid JSON",
    ),
    "prompts: no prompt field": (
        {"p.jsonl": jsonl({"prompt": "a"}, {"text": "b"})},
        ["generate", "--intervention", "{tmp}/iv.json", "--prompts", "{tmp}/p.jsonl"],
        "p.jsonl:2: expected an object with a non-empty 'prompt' or 'instruction' string",
    ),
    "prompts: missing file": (
        {},
        ["generate", "--intervention", "{tmp}/iv.json", "--prompts", "{tmp}/none.txt"],
        "--prompts {tmp}/none.txt: no such file",
    ),
    "prompts: empty file": (
        {"p.txt": "\n \n"},
        ["generate", "--intervention", "{tmp}/iv.json", "--prompts", "{tmp}/p.txt"],
        "p.txt: no prompts in file",
    ),
    "generate without a prompt": (
        {},
        ["generate", "--intervention", "{tmp}/iv.json"],
        "no prompt: give one or more as arguments, or --prompts FILE",
    ),
    "negative temperature": (
        {},
        ["generate", "--intervention", "{tmp}/iv.json", "--temperature", "-1", "hi"],
        "--temperature must be 0 (greedy) or more, not -1.0",
    ),
    "no new tokens": (
        {},
        ["generate", "--intervention", "{tmp}/iv.json", "--max-new-tokens", "0", "hi"],
        "--max-new-tokens must be at least 1, not 0",
    ),
}
NEEDS_MODEL = {"sweep", "search", "generate"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input(name, tmp_path, tiny_model_dir, capsys, monkeypatch):
    files, argv, fragment = CASES[name]
    for file_name, text in files.items():
        (tmp_path / file_name).write_text(text)
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] in NEEDS_MODEL and "--bogus" not in argv:
        argv += ["--model", str(tiny_model_dir)]
    if argv[0] in ("search", "front", "best") and "--storage" not in argv:
        argv += ["--storage", str(tmp_path / "runs")]
    before = sorted(p.name for p in tmp_path.iterdir())
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment.replace("{tmp}", str(tmp_path)) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "something was written"


def test_at_least_25_cases():
    assert len(CASES) >= 25


def save_vector(folder, tiny_lm_dir):
    from steerfront.lm import load_model
    from steerfront.methods import init_intervention
    from steerfront.methods.io import save_intervention

    lm = load_model(str(tiny_lm_dir))
    intervention = init_intervention("vector", lm, 1)
    intervention.params["v"] += 1.0
    return save_intervention(intervention, folder / "iv", lm)


@pytest.mark.parametrize("damage", ["tampered", "bad sidecar", "other model"])
def test_damaged_intervention_files(damage, tmp_path, tiny_model_dir, capsys):
    path = save_vector(tmp_path, tiny_model_dir)
    sidecar = path.with_suffix(".json")
    if damage == "tampered":
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        fragment = "modified"
    elif damage == "bad sidecar":
        sidecar.write_text("{not json")
        fragment = "iv.json"
    else:
        meta = json.loads(sidecar.read_text())
        meta["hidden_size"] = 576
        sidecar.write_text(json.dumps(meta))
        fragment = "made for a model with hidden_size 576"
    argv = ["generate", "--intervention", str(path), "--model", str(tiny_model_dir), "hi"]
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and fragment in err, err


def test_parquet_without_columns_via_cli(tmp_path, capsys):
    path = tmp_path / "ax.parquet"
    pq.write_table(pa.table({"input": ["q"]}), path)
    assert main(["datasets", "validate", str(path)]) == 2
    assert "lacks column(s) winning_output, losing_output" in capsys.readouterr().err


def test_no_pickle_loading_anywhere():
    package = Path(__file__).resolve().parents[2] / "steerfront"
    source = "".join(p.read_text() for p in package.rglob("*.py"))
    assert "pickle.load" not in source and "torch.load(" not in source
