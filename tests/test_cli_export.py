"""`steerfront export` from an intervention file: where it writes, which m it carries, and bad
input as one line, exit status 2 and nothing written. (From a search's front:
tests/search/test_search.py.)"""

import json

import pytest
import torch

from steerfront.cli import main
from steerfront.lm import load_model
from steerfront.methods import init_intervention
from steerfront.methods.io import save_intervention


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_model_dir):
    """A vector and a lora intervention for the tiny Llama, saved with m = 1.5 in their meta,
    as `best` saves them."""
    folder = tmp_path_factory.mktemp("interventions")
    lm = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    for form, layer in (("vector", 2), ("lora", 1), ("local_weight", 1)):
        intervention = init_intervention(form, lm, layer, rank=2, meta={"m": 1.5})
        torch.manual_seed(0)
        for tensor in intervention.params.values():
            tensor.copy_(torch.randn(tensor.shape))
        save_intervention(intervention, folder / form, lm)
    return folder


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_exports_beside_the_file_at_the_saved_m(saved, capsys):
    assert main(["export", str(saved / "vector.safetensors"), "--to", "gguf"]) == 0
    out = capsys.readouterr().out.splitlines()
    folder = saved / "vector-gguf"
    assert out == [
        f"exported vector at layer 2, m 1.5, as gguf (vector) to {folder}/: SERVE.md, "
        "control_vector.gguf, easysteer.json",
        f"how to serve it: {folder / 'SERVE.md'}",
    ]
    assert json.loads((folder / "easysteer.json").read_text())["scale"] == 1.5


def test_the_sidecar_names_the_intervention_as_well(saved, tmp_path, capsys):
    """`export FILE.json` exports what `export FILE.safetensors` does, as other commands take
    either file."""
    for name in ("vector.json", "vector.safetensors"):
        out = tmp_path / name
        assert main(["export", str(saved / name), "--to", "gguf", "--out", str(out)]) == 0
        assert "exported vector at layer 2, m 1.5, as gguf" in capsys.readouterr().out
    sidecar, tensors = (
        tmp_path / n / "control_vector.gguf" for n in ("vector.json", "vector.safetensors")
    )
    assert sidecar.read_bytes() == tensors.read_bytes()


def test_m_and_out_given(saved, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert (
        main(["export", str(saved / "lora"), "--to", "peft", "--m", "-2", "--out", str(out)]) == 0
    )
    assert "m -2, as peft (lora)" in capsys.readouterr().out
    assert (out / "adapter_model.safetensors").is_file()


BAD = {
    "form the format cannot carry": (
        ["{saved}/lora.safetensors", "--to", "gguf"],
        "--to gguf carries vector interventions, not lora; use --to peft or --to merged",
    ),
    "local_weight as a peft adapter": (
        ["{saved}/local_weight.safetensors", "--to", "peft"],
        "not local_weight; use --to merged",
    ),
    "intervention for another model": (
        ["{saved}/vector.safetensors", "--to", "gguf", "--model", "{wide}"],
        "made for a model with hidden_size 32, but {wide} has 48",
    ),
    "missing intervention": (
        ["{saved}/nothing.safetensors", "--to", "gguf"],
        "nothing.safetensors: no such file",
    ),
    "point of a file": (
        ["{saved}/vector.safetensors", "--to", "gguf", "--point", "1"],
        "is an intervention file, not a search",
    ),
    "unknown search": (["nosearch", "--to", "gguf", "--storage", "{tmp}"], "no trials.parquet"),
    "output folder in use": (
        ["{saved}/vector.safetensors", "--to", "merged", "--out", "{tmp}/used"],
        "used: exists and is not empty (mine.txt); pass --force to replace it",
    ),
    "unknown format": (["{saved}/vector.safetensors", "--to", "onnx"], "invalid choice: 'onnx'"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    case, saved, wide_model, tmp_path, capsys
):
    argv, fragment = BAD[case]
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("keep")
    names = {"saved": saved, "tmp": tmp_path, "wide": wide_model}
    before = listing(saved), listing(tmp_path)
    status = main(["export", *(a.format(**names) for a in argv)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("steerfront"), err
    assert fragment.format(**names) in err
    assert (listing(saved), listing(tmp_path)) == before
