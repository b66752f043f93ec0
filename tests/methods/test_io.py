import hashlib
import inspect
import json
import struct

import pytest
import torch
from conftest import ARCHS, save_tiny_model
from safetensors.torch import save_file

from steerfront.errors import SteerfrontError
from steerfront.lm import load_model
from steerfront.methods import FORMS, init_intervention
from steerfront.methods import io as intervention_io
from steerfront.methods.io import export_peft, load_intervention, save_intervention

IDS = torch.randint(3, 200, (2, 7), generator=torch.Generator().manual_seed(1))
META = {
    "objective": "pref_odds",
    "gamma": 0.5,
    "lambda_p": 1.0,
    "lambda_n": 0.25,
    "dataset": {"fingerprint": "3f2a9c", "n": 40},
}


def random_intervention(lm, form, layer=1, rank=3, seed=0):
    intervention = init_intervention(form, lm, layer, rank=rank, meta=META)
    torch.manual_seed(seed)
    for tensor in intervention.params.values():
        tensor.copy_(torch.randn(tensor.shape) * 0.5)
    return intervention


def logits(lm, ids=IDS):
    with torch.no_grad():
        return lm.model(input_ids=ids, use_cache=False).logits


def refused(call, *fragments):
    """Run `call`, expect a one-line SteerfrontError containing every fragment; return it."""
    with pytest.raises(SteerfrontError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def edit_sidecar(path, **changes):
    sidecar = json.loads(path.read_text())
    sidecar.update(changes)
    path.write_text(json.dumps(sidecar))


@pytest.mark.parametrize("form", FORMS)
def test_round_trip_keeps_tensors_metadata_and_steered_logits(tiny_lm, form, tmp_path):
    original = random_intervention(tiny_lm, form, layer=2)
    written = save_intervention(original, tmp_path / "steer", tiny_lm)
    assert written == tmp_path / "steer.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["steer.json", "steer.safetensors"]

    loaded = load_intervention(tmp_path / "steer", tiny_lm)
    assert (loaded.form, loaded.layer, loaded.rank, loaded.m) == (form, 2, original.rank, 1.0)
    assert loaded.meta == META
    assert loaded.params.keys() == original.params.keys()
    for name, tensor in original.params.items():
        assert torch.equal(loaded.params[name], tensor), name

    sidecar = json.loads((tmp_path / "steer.json").read_text())
    assert sidecar["model"] == tiny_lm.spec
    assert (sidecar["hidden_size"], sidecar["n_layers"]) == (32, 4)
    assert sidecar["rank"] == (3 if form == "lora" else None)
    assert sidecar["version"] == "0.1.0"
    digest = hashlib.sha256((tmp_path / "steer.safetensors").read_bytes()).hexdigest()
    assert sidecar["sha256"] == digest

    unsteered = logits(tiny_lm)
    with original.attached(tiny_lm):
        expected = logits(tiny_lm)
    with loaded.attached(tiny_lm):
        got = logits(tiny_lm)
    assert not torch.allclose(expected, unsteered, atol=1e-3)
    assert torch.equal(got, expected)


def test_path_may_carry_the_suffix_and_a_second_save_replaces_the_pair(tiny_lm, tmp_path):
    first = random_intervention(tiny_lm, "vector", seed=1)
    second = random_intervention(tiny_lm, "lora", seed=2)
    save_intervention(first, tmp_path / "x.safetensors", tiny_lm)
    save_intervention(second, str(tmp_path / "x"), tiny_lm)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]
    for given in ("x.safetensors", "x.json", "x"):  # either file of the pair, or its stem
        loaded = load_intervention(tmp_path / given, tiny_lm)
        assert loaded.form == "lora"
        assert torch.equal(loaded.params["B"], second.params["B"])


def test_interrupted_save_leaves_the_old_pair_and_no_temporary_files(
    tiny_lm, tmp_path, monkeypatch
):
    old = random_intervention(tiny_lm, "vector", seed=3)
    save_intervention(old, tmp_path / "x", tiny_lm)

    def half_write(tensors, filename, **_kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 5)
        raise OSError("disk full")

    monkeypatch.setattr(intervention_io, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_intervention(random_intervention(tiny_lm, "vector", seed=4), tmp_path / "x", tiny_lm)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]
    assert torch.equal(load_intervention(tmp_path / "x", tiny_lm).params["v"], old.params["v"])


@pytest.mark.parametrize(("field", "value"), [("hidden_size", 576), ("n_layers", 30)])
def test_sidecar_for_another_model_is_refused(tiny_lm, tmp_path, field, value):
    save_intervention(random_intervention(tiny_lm, "vector"), tmp_path / "x", tiny_lm)
    edit_sidecar(tmp_path / "x.json", **{field: value})
    have = {"hidden_size": 32, "n_layers": 4}[field]
    refused(
        lambda: load_intervention(tmp_path / "x", tiny_lm),
        f"{tmp_path / 'x.json'}: made for a model with {field} {value}, "
        f"but {tiny_lm.spec} has {have}",
    )


def test_tampered_tensor_file_is_refused(tiny_lm, tmp_path):
    save_intervention(random_intervention(tiny_lm, "lora"), tmp_path / "x", tiny_lm)
    path = tmp_path / "x.safetensors"
    data = bytearray(path.read_bytes())
    (header_length,) = struct.unpack("<Q", data[:8])
    data[8 + header_length + 5] ^= 0x01  # one bit of one float in the data region
    path.write_bytes(bytes(data))
    refused(lambda: load_intervention(path, tiny_lm), str(path), "modified", "tampered")


def test_wrong_tensor_shape_is_refused(tiny_lm, tmp_path):
    tensors = tmp_path / "x.safetensors"
    save_file({"v": torch.randn(tiny_lm.hidden_size + 1)}, tensors)
    sidecar = {
        "form": "vector",
        "layer": 1,
        "rank": None,
        "model": tiny_lm.spec,
        "hidden_size": tiny_lm.hidden_size,
        "n_layers": tiny_lm.n_layers,
        "shapes": {"v": [tiny_lm.hidden_size + 1]},
        "meta": {},
        "sha256": hashlib.sha256(tensors.read_bytes()).hexdigest(),
    }
    (tmp_path / "x.json").write_text(json.dumps(sidecar))
    refused(lambda: load_intervention(tensors, tiny_lm), "tensor 'v' is (33,)", "needs (32,)")


def test_sidecar_shapes_disagreeing_with_the_tensors_are_refused(tiny_lm, tmp_path):
    save_intervention(random_intervention(tiny_lm, "lora", rank=3), tmp_path / "x", tiny_lm)
    edit_sidecar(tmp_path / "x.json", rank=2)
    refused(lambda: load_intervention(tmp_path / "x", tiny_lm), "field 'rank' is 2", "rank 3")


def test_missing_files_are_refused(tiny_lm, tmp_path):
    refused(
        lambda: load_intervention(tmp_path / "nope", tiny_lm),
        f"{tmp_path / 'nope'}: no such intervention (neither nope.safetensors nor nope.json)",
    )
    save_intervention(random_intervention(tiny_lm, "vector"), tmp_path / "x", tiny_lm)
    (tmp_path / "x.safetensors").unlink()
    refused(lambda: load_intervention(tmp_path / "x", tiny_lm), str(tmp_path / "x.safetensors"))


def test_invalid_json_sidecar_is_refused(tiny_lm, tmp_path):
    save_intervention(random_intervention(tiny_lm, "vector"), tmp_path / "x", tiny_lm)
    (tmp_path / "x.json").write_text('{"form": "vector",\n  "layer": }')
    refused(
        lambda: load_intervention(tmp_path / "x", tiny_lm),
        str(tmp_path / "x.json"),
        "not valid JSON (line 2",
    )


@pytest.mark.parametrize("field", intervention_io._REQUIRED)
def test_missing_sidecar_field_is_refused(tiny_lm, tmp_path, field):
    save_intervention(random_intervention(tiny_lm, "vector"), tmp_path / "x", tiny_lm)
    sidecar = json.loads((tmp_path / "x.json").read_text())
    del sidecar[field]
    (tmp_path / "x.json").write_text(json.dumps(sidecar))
    refused(
        lambda: load_intervention(tmp_path / "x", tiny_lm),
        f"{tmp_path / 'x.json'}: field {field!r} is missing",
    )


def test_unknown_form_is_refused(tiny_lm, tmp_path):
    save_intervention(random_intervention(tiny_lm, "vector"), tmp_path / "x", tiny_lm)
    edit_sidecar(tmp_path / "x.json", form="prompt")
    refused(
        lambda: load_intervention(tmp_path / "x", tiny_lm),
        str(tmp_path / "x.json"),
        "field 'form' is 'prompt'",
    )


def test_files_are_json_and_safetensors_never_pickle(tiny_lm, tmp_path):
    intervention = random_intervention(tiny_lm, "local_weight")
    save_intervention(intervention, tmp_path / "x", tiny_lm)
    sidecar = json.loads((tmp_path / "x.json").read_text())
    assert sidecar["form"] == "local_weight"
    data = (tmp_path / "x.safetensors").read_bytes()
    assert data[:2] != b"PK"  # not torch.save's zip of pickles
    (header_length,) = struct.unpack("<Q", data[:8])
    assert data[8:9] == b"{"  # a JSON header right after its length, then raw tensor bytes
    header = json.loads(data[8 : 8 + header_length])
    assert header["dW"]["shape"] == [32, 64] and header["dW"]["dtype"] == "F32"
    assert header["db"]["shape"] == [32]
    assert 8 + header_length + 4 * (32 * 64 + 32) == len(data)
    source = inspect.getsource(intervention_io)
    assert "torch.load" not in source and "import pickle" not in source


@pytest.mark.parametrize("arch", ARCHS)
def test_peft_adapter_reproduces_our_lora(arch, tmp_path):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    folder = save_tiny_model(tmp_path / arch, arch)
    ours = load_model(str(folder), device="cpu", dtype=torch.float32)
    base = load_model(str(folder), device="cpu", dtype=torch.float32).model
    intervention = random_intervention(ours, "lora", layer=2, rank=4, seed=7)
    assert intervention.params["B"].abs().min() > 0

    adapter = export_peft(intervention, tmp_path / "adapter", ours)
    assert sorted(p.name for p in adapter.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    unsteered = logits(ours)
    with intervention.attached(ours):
        expected = logits(ours)
    assert not torch.allclose(expected, unsteered, atol=1e-3)

    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    adapted = [name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)]
    assert adapted == ["base_model.model.model.layers.2.mlp.down_proj"]
    with torch.no_grad():
        got = peft_model(input_ids=IDS, use_cache=False).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("form", ["vector", "local_weight"])
def test_export_peft_refuses_other_forms(tiny_lm, tmp_path, form):
    intervention = random_intervention(tiny_lm, form)
    refused(lambda: export_peft(intervention, tmp_path / "adapter", tiny_lm), repr(form))
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize("form", FORMS)
def test_saved_in_one_dtype_applies_in_the_other(tiny_lm_bf16, form, tmp_path):
    fp32 = load_model(tiny_lm_bf16.spec, device="cpu", dtype=torch.float32)
    intervention = random_intervention(fp32, form)
    for source, target in ((fp32, tiny_lm_bf16), (tiny_lm_bf16, fp32)):
        save_intervention(intervention, tmp_path / "iv", source)
        loaded = load_intervention(tmp_path / "iv", target)
        for name, tensor in intervention.params.items():
            assert loaded.params[name].dtype == torch.float32
            assert torch.equal(loaded.params[name], tensor)
        with loaded.attached(target, m=2.0):
            steered = logits(target)
        with intervention.attached(fp32, m=2.0):
            expected = logits(fp32)
        assert steered.dtype == target.dtype
        # bf16 keeps about 3 significant digits: its error is a small part of the steering.
        error = (steered.float() - expected).abs().max()
        assert error < (expected - logits(fp32)).abs().max() / 10
