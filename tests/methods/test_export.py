"""Exports for serving engines, on the tiny models: a merged folder and a PEFT adapter give the
steered logits, a GGUF control vector has llama.cpp's layout, and what a format cannot carry
is refused in one line with nothing written. (llama.cpp itself runs the GGUF export in
tests/integration/test_llama_cpp.py.)"""

import json

import numpy as np
import pytest
import torch
from conftest import ARCHS, save_tiny_model
from test_io import IDS, logits, random_intervention, refused

from steerfront.errors import SteerfrontError
from steerfront.lm import load_model
from steerfront.methods import FORMS
from steerfront.methods import export as export_module
from steerfront.methods.export import CONTROL_VECTOR, EASYSTEER, export
from steerfront.methods.gguf import control_vector_data, write_control_vector

M = 1.7
# Which forms each architecture can merge: a vector needs a down-projection bias on a block
# that adds the MLP's output to the stream as it is (Llama's `mlp_bias`), local_weight a bias.
MERGES = {
    "llama": {"vector", "lora", "local_weight"},
    "qwen2": {"lora"},
    "gemma2": {"lora"},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Each architecture's tiny model loaded twice in fp32: one to steer, one to stay plain."""
    loaded = {}
    for arch in ARCHS:
        folder = save_tiny_model(tmp_path_factory.mktemp(arch), arch)
        loaded[arch] = load_model(str(folder), device="cpu", dtype=torch.float32)
    return loaded


def steered(lm, intervention, m=M, ids=IDS):
    with intervention.attached(lm, m=m):
        return logits(lm, ids)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("form", FORMS)
def test_merged_folder_gives_the_steered_logits(models, tmp_path, arch, form):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = models[arch]
    intervention = random_intervention(lm, form, layer=2, rank=3)
    if form not in MERGES[arch]:
        message = refused(lambda: export(intervention, lm, "merged", tmp_path / "out", M))
        assert ("--to gguf" in message) == (form == "vector")
        assert list(tmp_path.iterdir()) == []
        return
    out = export(intervention, lm, "merged", tmp_path / "out", M)
    assert {"config.json", "model.safetensors", "tokenizer.json", "SERVE.md"} <= {
        p.name for p in out.iterdir()
    }
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    expected = steered(lm, intervention)
    assert (expected - logits(lm)).abs().max() > 1e-2
    with torch.no_grad():
        got = merged(input_ids=IDS, use_cache=False).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert AutoTokenizer.from_pretrained(out).chat_template == lm.tokenizer.chat_template
    assert f"vllm serve {out.resolve()}" in (out / "SERVE.md").read_text()
    with torch.no_grad():  # the model exported from is untouched
        torch.testing.assert_close(logits(lm), logits(load_model(lm.spec)), atol=0, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("m", [-0.8, 2.5])
def test_peft_adapter_folds_m_in(models, tmp_path, arch, m):
    from peft import PeftModel

    lm = models[arch]
    intervention = random_intervention(lm, "lora", layer=1, rank=4, seed=3)
    out = export(intervention, lm, "peft", tmp_path / "adapter", m)
    assert sorted(p.name for p in out.iterdir()) == [
        "SERVE.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 4  # scale 1: m lives in the weights
    assert config["base_model_name_or_path"] == lm.spec
    base = load_model(lm.spec).model
    with torch.no_grad():
        got = PeftModel.from_pretrained(base, str(out)).eval()(input_ids=IDS).logits
    torch.testing.assert_close(got, steered(lm, intervention, m), atol=1e-5, rtol=0)
    assert f"--lora-modules steer={out.resolve()}" in (out / "SERVE.md").read_text()


def test_gguf_has_llama_cpps_layout(models, tmp_path):
    import gguf

    lm = models["llama"]
    intervention = random_intervention(lm, "vector", layer=2)
    out = export(intervention, lm, "gguf", tmp_path / "cv", M)
    assert sorted(p.name for p in out.iterdir()) == ["SERVE.md", CONTROL_VECTOR, EASYSTEER]
    reader = gguf.GGUFReader(out / CONTROL_VECTOR)
    field = reader.get_field("general.architecture")
    assert field.contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "llama"
    assert reader.get_field("controlvector.layer_count").contents() == 1
    (tensor,) = reader.tensors
    assert tensor.name == "direction.2"  # our layer 2 acts after block 2: llama.cpp's N = 2
    assert tensor.tensor_type == gguf.GGMLQuantizationType.F32 and list(tensor.shape) == [32]
    v = intervention.params["v"].numpy()
    np.testing.assert_array_equal(tensor.data, v)  # at m = 1: the engines take m as the scale

    # As llama.cpp's loader lays it out for llama_set_adapter_cvec: rows from layer 1.
    width, data = control_vector_data(out / CONTROL_VECTOR, scale=M)
    assert width == 32 and data.shape == (2 * 32,)
    np.testing.assert_array_equal(data[:32], 0)
    np.testing.assert_allclose(data[32:], v * M, rtol=1e-6)

    spec = json.loads((out / EASYSTEER).read_text())
    assert spec["steer_vector_local_path"] == str(out.resolve() / CONTROL_VECTOR)
    assert (spec["scale"], spec["target_layers"], spec["algorithm"]) == (M, [2], "direct")
    assert spec["prefill_trigger_tokens"] == spec["generate_trigger_tokens"] == [-1]
    serve = (out / "SERVE.md").read_text()
    assert f"--control-vector-scaled {out.resolve() / CONTROL_VECTOR} {M}" in serve


def test_control_vector_reader_refuses_what_llama_cpp_refuses(tmp_path):
    write_control_vector(tmp_path / "ok.gguf", np.ones(4, dtype=np.float32), 3, "llama")
    assert control_vector_data(tmp_path / "ok.gguf")[1].shape == (12,)
    with pytest.raises(SteerfrontError, match="N = 0"):
        write_control_vector(tmp_path / "zero.gguf", np.ones(4, dtype=np.float32), 0, "llama")
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), arch="controlvector")
    writer.add_tensor("direction.0", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    refused(lambda: control_vector_data(tmp_path / "bad.gguf"), "direction.0")


@pytest.mark.parametrize(
    ("form", "to", "fragment"),
    [
        ("lora", "gguf", "--to gguf carries vector interventions, not lora; use --to peft"),
        ("local_weight", "gguf", "not local_weight; use --to merged"),
        ("vector", "peft", "--to peft carries lora interventions, not vector; use --to gguf"),
        ("local_weight", "peft", "use --to merged"),
    ],
)
def test_a_form_the_format_cannot_carry_is_refused(models, tmp_path, form, to, fragment):
    intervention = random_intervention(models["llama"], form)
    refused(lambda: export(intervention, models["llama"], to, tmp_path / "out", M), fragment)
    assert list(tmp_path.iterdir()) == []


def test_a_vector_after_block_0_is_refused_for_llama_cpp(models, tmp_path):
    intervention = random_intervention(models["llama"], "vector", layer=0)
    refused(
        lambda: export(intervention, models["llama"], "gguf", tmp_path / "out", M),
        "rejects N = 0",
        "--to merged",
    )
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_in_use_is_refused_and_kept(models, tmp_path):
    intervention = random_intervention(models["llama"], "vector")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    (tmp_path / "file").write_text("keep me too")
    for out in (tmp_path / "out", tmp_path / "file"):
        refused(
            lambda out=out: export(intervention, models["llama"], "gguf", out, M),
            f"--out {out}: exists and is not an empty folder",
        )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["file", "mine.txt", "out"]
    (tmp_path / "out" / "mine.txt").unlink()  # an empty folder is taken
    export(intervention, models["llama"], "gguf", tmp_path / "out", M)
    assert (tmp_path / "out" / CONTROL_VECTOR).is_file()


def test_an_interrupted_export_leaves_nothing(models, tmp_path, monkeypatch):
    def half_written(intervention, folder, lm, *args, **kwargs):
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "write_peft", half_written)
    intervention = random_intervention(models["llama"], "lora")
    with pytest.raises(OSError, match="disk full"):
        export(intervention, models["llama"], "peft", tmp_path / "out", M)
    assert list(tmp_path.iterdir()) == []
