"""Nothing lost, nothing replaced without a word, and errors that name the right thing before
the model loads: folders that hold files are refused unless --force (real files on disk),
exported files readable like the rest, bad interventions, models and layers named from their
files and the model's configuration alone."""

import json
import os
import stat

import pytest
import torch

import steerfront.lm
from steerfront.cli import main
from steerfront.defaults import DEFAULT_MODEL

FAST = ["--steps", "2", "--batch-size", "4", "--no-fit", "--m", "-1,0,1", "-q"]


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if any command loads a model (what is checked must come before it)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    import steerfront.models  # binds load_model when first imported: patched there too

    monkeypatch.setattr(steerfront.lm, "load_model", refuse)
    monkeypatch.setattr(steerfront.models, "load_model", refuse)


def listing(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_model_dir):
    """A vector and a lora intervention for the tiny Llama."""
    from steerfront.lm import load_model
    from steerfront.methods import init_intervention
    from steerfront.methods.io import save_intervention

    folder = tmp_path_factory.mktemp("saved")
    lm = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    for form, layer in (("vector", 2), ("lora", 1)):
        intervention = init_intervention(form, lm, layer, rank=2, meta={"m": 1.5})
        torch.manual_seed(0)
        for tensor in intervention.params.values():
            tensor.copy_(torch.randn(tensor.shape))
        save_intervention(intervention, folder / form, lm)
    return folder


# --- sweep --out, search --name, export --out: refused unless --force --------------------------


def test_sweep_refuses_a_folder_that_holds_files_before_the_model_loads(
    capsys, tmp_path, tiny_model_dir, no_model_load
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "fits.json").write_text("{}")
    before = listing(out)
    status, stdout, err = run(capsys, "sweep", "--model", tiny_model_dir, "--out", out, *FAST)
    assert status == 2 and stdout == "" and err.count("\n") == 1, err
    assert f"--out {out}: exists and is not empty (fits.json, notes.txt)" in err
    assert "pass --force to replace it" in err
    assert listing(out) == before


def test_sweep_refuses_its_default_folder_when_it_holds_an_earlier_sweep(
    capsys, tmp_path, tiny_model_dir, monkeypatch, no_model_load
):
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "runs" / "sweep-agreeableness-vector-split-l2"
    earlier.mkdir(parents=True)
    (earlier / "summary.parquet").write_bytes(b"earlier")
    status, _, err = run(capsys, "sweep", "--model", tiny_model_dir, *FAST)
    assert status == 2 and "runs/sweep-agreeableness-vector-split-l2: exists and is not" in err
    assert (earlier / "summary.parquet").read_bytes() == b"earlier"


def test_sweep_force_replaces_the_folder_whole(capsys, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["sweep", "--model", tiny_model_dir, "--out", out, *FAST, "--force"]
    status, stdout, err = run(capsys, *argv)
    assert status == 0, err
    assert not (out / "notes.txt").exists() and (out / "summary.parquet").is_file()
    assert stdout.splitlines()[-1].startswith(f"wrote {out}/: intervention.json")
    status, _, err = run(capsys, *argv[:-1])  # and the sweep's own folder is kept the same way
    assert status == 2 and "exists and is not empty" in err


def test_a_new_search_refuses_a_folder_of_that_name_that_is_no_search(capsys, tmp_path):
    folder = tmp_path / "runs" / "notes"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    argv = ["search", "--name", "notes", "--storage", tmp_path / "runs", "--trials", "1"]
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert f"--name notes: {folder} exists and holds notes.txt, not a search" in err
    assert listing(folder) == {"notes.txt": b"mine"}


def test_export_force_replaces_and_every_exported_file_is_0644(capsys, tmp_path, saved):
    old = os.umask(0o022)
    try:
        for form, to in (("lora", "peft"), ("lora", "merged"), ("vector", "gguf")):
            out = tmp_path / f"{form}-{to}"
            out.mkdir()
            (out / "mine.txt").write_text("keep")
            argv = ["export", saved / f"{form}.safetensors", "--to", to, "--out", out]
            status, _, err = run(capsys, *argv)
            assert status == 2 and "exists and is not empty (mine.txt)" in err
            assert listing(out) == {"mine.txt": b"keep"}
            status, stdout, err = run(capsys, *argv, "--force", "--json")
            assert status == 0, err
            document = json.loads(stdout)
            assert document["out"] == str(out) and "mine.txt" not in document["files"]
            assert (document["to"], document["form"], document["m"]) == (to, form, 1.5)
            for path in [out, *out.rglob("*")]:
                mode = stat.S_IMODE(path.stat().st_mode)
                assert mode == (0o755 if path.is_dir() else 0o644), path
    finally:
        os.umask(old)
    assert (tmp_path / "lora-merged" / "model.safetensors").is_file()
    assert (tmp_path / "lora-peft" / "adapter_model.safetensors").is_file()


# --- the PEFT adapter names its base model by its public name ------------------------------------


def test_peft_adapter_names_the_model_publicly_and_serve_md_the_local_copy(
    capsys, tmp_path, saved, tiny_model_dir
):
    from steerfront.lm import public_name
    from steerfront.methods.export import serve_peft

    out = tmp_path / "adapter"
    assert main(["export", str(saved / "lora.safetensors"), "--to", "peft", "--out", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())  # a folder: path
    assert public_name(DEFAULT_MODEL) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert public_name("org/model") == "org/model"
    text = serve_peft(out, "/cache/models/smollm2", 4, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "names its base model `HuggingFaceTB/SmolLM2-135M-Instruct`" in text
    assert "local, at\n/cache/models/smollm2\n" in text
    assert 'from_pretrained("/cache/models/smollm2")' in text


# --- refused from the files and the model's configuration, before the model loads ---------------


def tampered(folder, saved):
    """A copy of the vector with one byte of its tensors changed."""
    for suffix in (".safetensors", ".json"):
        (folder / f"iv{suffix}").write_bytes((saved / f"vector{suffix}").read_bytes())
    data = bytearray((folder / "iv.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "iv.safetensors").write_bytes(bytes(data))
    return folder / "iv.safetensors"


EARLY = {
    "layer 99": (
        ["sweep", "--layer", "99", "--out", "{tmp}/o", "--model", "{tiny}"],
        "--layer 99: layer 99 is out of range for {tiny} (layers 0..3)",
    ),
    "objective the form cannot take": (
        ["sweep", "--form", "lora", "--objective", "diffmean", "--model", "{tiny}"],
        "objective diffmean cannot produce a lora intervention (vector only)",
    ),
    "sweep rank 0": (
        ["sweep", "--form", "lora", "--rank", "0", "--model", "{tiny}", "--out", "{tmp}/o"],
        "--rank must be at least 1, not 0",
    ),
    "export: non-empty out": (
        ["export", "{saved}/vector.safetensors", "--to", "gguf", "--out", "{tmp}/used"],
        "--out {tmp}/used: exists and is not empty (mine.txt)",
    ),
    "export: peft for a vector": (
        ["export", "{saved}/vector.safetensors", "--to", "peft", "--out", "{tmp}/o"],
        "--to peft carries lora interventions, not vector; use --to gguf or --to merged",
    ),
    "export: checksum mismatch": (
        ["export", "{tampered}", "--to", "gguf", "--out", "{tmp}/o"],
        "{tampered}: sha256 differs from the one in iv.json",
    ),
    "export: another width": (
        ["export", "{saved}/vector.safetensors", "--to", "gguf", "--model", "{wide}"],
        "vector.json: made for a model with hidden_size 32, but {wide} has 48",
    ),
    "evaluate: another model": (
        ["evaluate", "--intervention", "{saved}/vector.safetensors", "--model", "{wide}"],
        "--model {wide}: {saved}/vector.safetensors was made for model {tiny}",
    ),
    "generate: checksum mismatch": (
        ["generate", "--intervention", "{tampered}", "hi"],
        "{tampered}: sha256 differs",
    ),
    "evaluate: missing intervention": (
        ["evaluate", "--intervention", "{tmp}/nope.safetensors"],
        "{tmp}/nope.safetensors: no such file",
    ),
    "generate: missing sidecar": (
        ["generate", "--intervention", "{tmp}/lone.safetensors", "hi"],
        "{tmp}/lone.json: sidecar file is missing (the JSON beside lone.safetensors)",
    ),
    "generate: neither file": (
        ["generate", "--intervention", "{tmp}/nothing", "hi"],
        "{tmp}/nothing: no such intervention (neither nothing.safetensors nor nothing.json)",
    ),
}


@pytest.mark.parametrize("case", EARLY)
def test_refused_before_the_model_loads(
    case, capsys, tmp_path, saved, tiny_model_dir, wide_model, no_model_load
):
    argv, fragment = EARLY[case]
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("keep")
    (tmp_path / "lone.safetensors").write_bytes(b"x")
    names = {
        "tmp": tmp_path,
        "tiny": tiny_model_dir,
        "saved": saved,
        "wide": wide_model,
        "tampered": tampered(tmp_path, saved),
    }
    before = listing(tmp_path), listing(saved)
    status, out, err = run(capsys, *(a.format(**names) for a in argv))
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert fragment.format(**names) in err
    assert (listing(tmp_path), listing(saved)) == before


# --- a model given by path: named as given, with what is wrong with it ---------------------------


def test_a_model_path_is_named_with_what_is_wrong(capsys, tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    (tmp_path / "file.bin").write_text("x")
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    cases = {
        "./nope": f"model ./nope: no such folder ({tmp_path / 'nope'})",
        "models/nope": "model models/nope: no such folder",
        str(tmp_path / "a" / "b"): "no such folder",
        "notes": "model notes: not a model folder: no config.json (holds a.txt)",
        "file.bin": "model file.bin: a file, not a model folder",
        "half": "model half: no tokenizer in the folder",
    }
    for spec, fragment in cases.items():
        status, out, err = run(capsys, "evaluate", "--model", spec)
        assert status == 2 and out == "" and err.count("\n") == 1, err
        assert fragment in err, err
        assert "hub" not in err and "tokenizer backend" not in err


def test_the_default_models_configuration_is_read_without_its_weights(monkeypatch):
    """From the packaged GGUF's metadata where it was never converted (no weights read)."""
    from transformers import AutoModelForCausalLM

    from steerfront.lm import model_config

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(steerfront.lm, "_converted", lambda gguf: None)
    config = model_config(DEFAULT_MODEL)
    assert (config.num_hidden_layers, config.hidden_size, config.model_type) == (30, 576, "llama")
