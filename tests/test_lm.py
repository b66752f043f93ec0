import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from steerfront import lm as lm_module
from steerfront.errors import SteerfrontError
from steerfront.lm import load_model


def test_local_folder_exposes_what_steering_needs(tiny_lm):
    assert tiny_lm.n_layers == 4
    assert tiny_lm.hidden_size == 32
    assert tiny_lm.down_proj(2) is tiny_lm.layers[2].mlp.down_proj
    assert tiny_lm.down_proj(2).out_features == 32
    assert tiny_lm.chat_template is not None
    assert tiny_lm.dtype == torch.float32 and tiny_lm.device.type == "cpu"
    assert not any(p.requires_grad for p in tiny_lm.model.parameters())


@pytest.mark.parametrize("layer", [-1, 4, 1.5])
def test_impossible_layer(tiny_lm, layer):
    with pytest.raises(SteerfrontError, match=r"layer .* out of range .* \(layers 0\.\.3\)"):
        tiny_lm.down_proj(layer)


def test_prefix_plus_suffix_equals_the_full_forward(tiny_lm):
    torch.manual_seed(1)
    ids = torch.randint(3, 200, (3, 11))
    full = tiny_lm.model(input_ids=ids, use_cache=False).logits
    causal = torch.full((11, 11), torch.finfo(torch.float32).min).triu(1)
    mask = causal.expand(3, 1, 11, 11)
    positions = torch.arange(11).expand(3, 11)
    for layer in (0, 2, 3):
        hidden = tiny_lm.prefix(ids, layer, mask, positions)
        logits = tiny_lm.head(tiny_lm.suffix(hidden, layer, mask, positions))
        torch.testing.assert_close(logits, full, atol=1e-4, rtol=0)


def test_hub_id_unavailable_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SteerfrontError) as info:
        load_model("no-such-org/no-such-model")
    message = str(info.value)
    assert "'no-such-org/no-such-model'" in message and "offline" in message
    assert "\n" not in message


def test_hub_id_with_the_hub_unreachable_is_one_line_without_retries(tmp_path):
    """The hub is asked once, briefly (here a port nothing listens on answers at once); then
    only the local cache is tried."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "steerfront.cli", "evaluate", "--model", "no-such-org/no-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # generous: the point is no retries, and no retry lines
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "'no-such-org/no-model'" in result.stderr
    assert "hub http://127.0.0.1:9 unreachable" in result.stderr
    assert "not in the local cache" in result.stderr


def test_the_converted_model_is_keyed_by_the_ggufs_content(monkeypatch, tmp_path):
    """A reinstall (the same file, elsewhere or touched) reuses the conversion; a changed file
    gets its own; a file seen before is not hashed again."""
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path / "cache"))
    converted, hashed = [], []

    def convert(gguf, out):
        converted.append(gguf)
        (out / "config.json").write_text("{}")

    real_sha256 = lm_module.sha256
    monkeypatch.setattr(lm_module, "sha256", lambda path: hashed.append(path) or real_sha256(path))
    monkeypatch.setattr(lm_module, "_convert_gguf", convert)
    gguf = {}
    monkeypatch.setattr(lm_module, "_builtin_gguf", lambda: gguf["path"])
    gguf["path"] = first = tmp_path / "site-a" / "model.gguf"
    first.parent.mkdir()
    first.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    folder = lm_module._builtin_folder()
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert folder.name == f"smollm2-135m-instruct-{digest[:16]}" and converted == [first]
    assert lm_module._builtin_folder() == folder and hashed == [first]
    gguf["path"] = reinstalled = tmp_path / "site-b" / "model.gguf"
    reinstalled.parent.mkdir()
    shutil.copy(first, reinstalled)
    os.utime(reinstalled, ns=(1, 1))
    assert lm_module._builtin_folder() == folder and converted == [first]
    source = json.loads((folder / "source.json").read_text())
    assert source["sha256"] == digest
    assert [f["path"] for f in source["files"]] == [str(first), str(reinstalled)]
    reinstalled.write_bytes(b"GGUF" + bytes(64))
    other = lm_module._builtin_folder()
    assert other != folder and converted == [first, reinstalled]
    assert {p.name for p in (tmp_path / "cache" / "models").iterdir()} == {folder.name, other.name}


def test_interrupted_conversion_leaves_nothing_trusted(monkeypatch, tmp_path):
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path))

    def half_written(gguf, out):
        (out / "config.json").write_text("{")
        raise KeyboardInterrupt

    monkeypatch.setattr(lm_module, "_convert_gguf", half_written)
    with pytest.raises(KeyboardInterrupt):
        lm_module._builtin_folder()
    assert list((tmp_path / "models").iterdir()) == []


x86_only = pytest.mark.skipif(not lm_module._ONEDNN, reason="x86 CPUs with oneDNN's linear only")


def onednn_calls(run) -> int:
    from torch.profiler import profile

    with profile() as trace:
        run()
    return sum(e.name == "mkldnn::_linear_pointwise" for e in trace.events())


@x86_only
def test_a_measurement_writes_the_cache(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path))
    monkeypatch.setattr(lm_module, "_kernel", lm_module._kernel)  # restored afterwards
    lm = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    (path,) = (tmp_path / "kernels").glob("*.json")
    record = json.loads(path.read_text())
    assert record["cpu"] == lm_module._cpu_name() and record["torch"] == torch.__version__
    assert record["shapes"] == [[16, 32], [32, 32], [32, 64], [64, 32]]  # k/v, q/o, down, up
    assert record["kernel"] == min(record["seconds"], key=record["seconds"].get)
    assert lm_module.linear_kernel() == record["kernel"]
    assert lm.n_layers == 4
    path.write_text("{")  # damaged: measured again
    load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    assert json.loads(path.read_text())["kernel"] == lm_module.linear_kernel()


@x86_only
@pytest.mark.parametrize("kernel", ["aten", "onednn"])
def test_kernel_choice_is_read_from_the_cache(kernel, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path))
    monkeypatch.setattr(lm_module, "_kernel", lm_module._kernel)
    load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    (path,) = (tmp_path / "kernels").glob("*.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "kernel": kernel}))
    monkeypatch.setattr(lm_module, "_time_kernels", lambda *_: pytest.fail("measured again"))
    lm = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    assert lm_module.linear_kernel() == kernel
    hidden = torch.randn(2, 5, lm.hidden_size)
    assert onednn_calls(lambda: lm.head(hidden)) == (1 if kernel == "onednn" else 0)


@x86_only
def test_fast_linear_runs_onednn_and_equals_linear(monkeypatch):
    from torch.profiler import profile

    monkeypatch.setattr(lm_module, "_kernel", "onednn")
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*s, generator=generator) for s in ((3, 50, 64), (96, 64), (96,)))
    with profile() as trace, lm_module.fast_linear():
        fast = torch.nn.functional.linear(x, weight, bias)
        fast_nobias = torch.nn.functional.linear(x[0], weight)
    assert sum(e.name == "mkldnn::_linear_pointwise" for e in trace.events()) == 2
    torch.testing.assert_close(fast, torch.nn.functional.linear(x, weight, bias))
    torch.testing.assert_close(fast_nobias, x[0] @ weight.T)


def test_fast_linear_gradients_equal_torchs(monkeypatch):
    monkeypatch.setattr(lm_module, "_kernel", "onednn" if lm_module._ONEDNN else "aten")
    generator = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*s, generator=generator) for s in ((2, 4, 8), (5, 8), (5,)))
    for learns in ((x,), (x, weight, bias)):  # a frozen layer (steering), then a learning one
        for t in learns:
            t.requires_grad_(True)
        grads = []
        for context in (lm_module.fast_linear, nullcontext):
            with context():
                (torch.nn.functional.linear(x, weight, bias) ** 2).sum().backward()
            grads.append([t.grad for t in learns])
            for t in learns:
                t.grad = None
        for fast, plain in zip(*grads, strict=True):
            torch.testing.assert_close(fast, plain)


ROPES = {
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0},
    "longrope": {
        "rope_type": "longrope",
        "factor": 4.0,
        "rope_theta": 10000.0,
        "short_factor": [1.0, 1.0, 1.0, 1.0],
        "long_factor": [1.0, 2.0, 4.0, 8.0],
        "original_max_position_embeddings": 128,
    },
}


@pytest.mark.parametrize("rope", ROPES)
def test_length_dependent_rope_exact_below_its_limit_refused_past_it(rope, tmp_path):
    from conftest import save_tiny_model, tiny_config, tiny_tokenizer
    from transformers import AutoModelForCausalLM

    from steerfront.data import PairSet, PolarityPair, encode_pairs
    from steerfront.methods import init_intervention
    from steerfront.scoring.evaluate import evaluate
    from steerfront.scoring.reference import reference_nll

    save_tiny_model(tmp_path, "llama")
    config = tiny_config("llama", len(tiny_tokenizer()))
    config.rope_parameters = ROPES[rope]
    config.max_position_embeddings = 128 if rope == "dynamic" else 512
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), device="cpu", dtype=torch.float32)
    assert lm.model.model.rotary_emb.rope_type == rope
    short = PolarityPair("Is it on? " * 11 + "Say.", "Yes, it is.", "No!")  # a token a byte
    encoded = encode_pairs(lm.tokenizer, PairSet("short", (short,)))
    assert len(encoded[0].prompt) + len(encoded[0].positive) == 128
    vector = init_intervention("vector", lm, 1)
    vector.params["v"].normal_(generator=torch.Generator().manual_seed(1))
    scores = evaluate(lm, encoded, vector, 2.0)
    with vector.attached(lm, m=2.0):
        expected = [reference_nll(lm, encoded[0], positive) for positive in (True, False)]
    np.testing.assert_allclose([scores.l_p[0], scores.l_n[0]], expected, atol=1e-4, rtol=0)
    longer = PairSet("long", (PolarityPair(short.prompt, "Yes, it is!!", "No"),))
    message = f"sequences of 129 tokens pass {tmp_path}'s {rope} rotary embedding limit (128 tokens"
    with pytest.raises(SteerfrontError, match=re.escape(message)):
        evaluate(lm, encode_pairs(lm.tokenizer, longer), vector, 2.0)


def test_a_dtype_by_name(tiny_model_dir):
    assert load_model(str(tiny_model_dir), dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(SteerfrontError, match=r"^dtype 'float16': choose from auto, float32, "):
        load_model(str(tiny_model_dir), dtype="float16")


def test_gemma2_past_its_sliding_window_scores_as_its_own_forward(tmp_path):
    """A cut-down Gemma-2 (a window of 8 positions on every other layer, soft-capping that
    bites, post-norms) on pairs of 25 to 60 tokens, through the packed, frozen-prefix path with
    the shared prompt, unsteered and steered: the stock forward's scores, while leaving out any
    one of the window or the two soft-caps changes them by nats."""
    from conftest import tiny_config, tiny_tokenizer
    from transformers import AutoModelForCausalLM

    from steerfront.data import PairSet, PolarityPair, encode_pairs
    from steerfront.methods import init_intervention
    from steerfront.scoring.evaluate import evaluate
    from steerfront.scoring.reference import reference_nll

    tokenizer = tiny_tokenizer()
    config = tiny_config("gemma2", len(tokenizer))
    # Weights ten times the usual scale: attention scores and logits large enough for the caps.
    config.update(
        {
            "sliding_window": 8,
            "attn_logit_softcapping": 2.0,
            "final_logit_softcapping": 2.0,
            "initializer_range": 0.3,
        }
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), device="cpu", dtype=torch.float32)
    assert [b.self_attn.sliding_window for b in lm.layers] == [8, None, 8, None]
    pairs = PairSet(
        "long",
        (
            PolarityPair("Tell me about your weekend.", "It was calm and slow.", "Awful."),
            PolarityPair("Is the sky blue?", "Yes", "No"),
            PolarityPair("Describe the sea.", "Wide, grey and loud today.", "Flat, blue."),
        ),
    )
    encoded = encode_pairs(lm.tokenizer, pairs)
    vector = init_intervention("vector", lm, 1)
    vector.params["v"].normal_(generator=torch.Generator().manual_seed(1))
    lora = init_intervention("lora", lm, 2, rank=2)
    lora.params["B"].normal_(generator=torch.Generator().manual_seed(2))

    def stock(intervention=None, m=0.0):
        with intervention.attached(lm, m=m) if intervention else nullcontext():
            return np.array([[reference_nll(lm, e, p) for p in (True, False)] for e in encoded])

    for intervention, m in ((None, 0.0), (vector, 2.0), (lora, -1.5)):
        scores = evaluate(lm, encoded, intervention, m)
        got = np.stack([scores.l_p, scores.l_n], 1)
        np.testing.assert_allclose(got, stock(intervention, m), atol=1e-4, rtol=0)
    unsteered = stock()
    attention = [b.self_attn for b in lm.layers]
    for modules, name, off in (
        ([lm.config], "sliding_window", 10_000),
        (attention, "attn_logit_softcapping", None),
        ([lm.config], "final_logit_softcapping", None),
    ):
        kept = [getattr(module, name) for module in modules]
        for module in modules:
            setattr(module, name, off)
        try:
            assert np.abs(stock() - unsteered).max() > 1.0, name
        finally:
            for module, value in zip(modules, kept, strict=True):
                setattr(module, name, value)
