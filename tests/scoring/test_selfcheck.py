import re

import numpy as np
import pytest
import torch
from conftest import tiny_tokenizer

from steerfront.data import PairSet, encode_pairs, load_concept
from steerfront.errors import SteerfrontError
from steerfront.lm import LM
from steerfront.methods import FORMS, init_intervention
from steerfront.models import load_checked
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.reference import reference_nll
from steerfront.scoring.selfcheck import self_check

M = 1.5
PAIRS = PairSet(
    "mixed", load_concept("sentiment").pairs[:3] + load_concept("agreeableness").pairs[:2]
)


def tiny_scaled_config(arch: str, vocab_size: int):
    """Granite and Cohere, whose forwards scale the logits (and, for Granite, more)."""
    from transformers import CohereConfig, GraniteConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    if arch == "granite":
        return GraniteConfig(
            **common,
            logits_scaling=8.0,
            embedding_multiplier=4.0,
            residual_multiplier=0.5,
            attention_multiplier=0.2,
        )
    return CohereConfig(**common, logit_scale=4.0)


@pytest.fixture(scope="module", params=["granite", "cohere"])
def scaled_dir(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp(request.param)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(
        tiny_scaled_config(request.param, len(tokenizer))
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scaled_lm(scaled_dir):
    return load_checked(str(scaled_dir), device="cpu", dtype=torch.float32)


@pytest.mark.parametrize("form", FORMS)
def test_scaled_logits_equal_the_plain_reference(scaled_lm, form):
    encoded = encode_pairs(scaled_lm.tokenizer, PAIRS)
    intervention = init_intervention(form, scaled_lm, 1, rank=2)
    generator = torch.Generator().manual_seed(1)
    for tensor in intervention.params.values():
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    scores = evaluate(scaled_lm, encoded, intervention, M)
    with intervention.attached(scaled_lm, m=M):
        expected = [[reference_nll(scaled_lm, e, p) for p in (True, False)] for e in encoded]
    np.testing.assert_allclose(scores.l_p, np.array(expected)[:, 0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores.l_n, np.array(expected)[:, 1], atol=1e-4, rtol=0)


def test_self_check_passes_on_scaled_logits(scaled_lm):
    assert self_check(scaled_lm) < 1e-4


def test_self_check_refuses_a_fast_path_that_drops_the_scaling(scaled_dir, monkeypatch):
    monkeypatch.setattr(LM, "head", lambda self, hidden: self.model.lm_head(hidden))
    with pytest.raises(SteerfrontError) as info:
        load_checked(str(scaled_dir), device="cpu", dtype=torch.float32)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{scaled_dir} fails the self-check: on probe 1 (unsteered)")
    assert re.search(
        r"fast path gives L_p [\d.]+, the model's own forward [\d.]+ \(off by [\d.]+; "
        r"tolerance 0.001 for a 3-token completion in float32\)$",  # "Yes": 3 bytes
        message,
    )


def test_self_check_refuses_a_layout_the_fast_path_cannot_run(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config

    tokenizer = tiny_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(SteerfrontError) as info:  # GPT-2 keeps its blocks in transformer.h
        load_checked(str(tmp_path), device="cpu", dtype=torch.float32)
    assert str(info.value) == (
        f"{tmp_path} fails the self-check: steerfront's fast path cannot run it "
        "(AttributeError: 'GPT2LMHeadModel' object has no attribute 'model')"
    )


def test_self_check_refuses_a_fast_path_that_drops_the_vector_in_the_prefix(tiny_lm, monkeypatch):
    from steerfront.methods.interventions import Intervention

    monkeypatch.setattr(Intervention, "enter", lambda self, hidden: hidden)
    with pytest.raises(SteerfrontError) as info:
        self_check(tiny_lm)
    middle = tiny_lm.n_layers // 2
    assert str(info.value).startswith(
        f"{tiny_lm.spec} fails the self-check: on probe 2 (vector at layer {middle}, m=2) "
    )


@pytest.mark.parametrize("form", FORMS)
def test_self_check_refuses_a_fast_path_that_steers_a_form_wrong(tiny_lm, monkeypatch, form):
    import steerfront.scoring.selfcheck as selfcheck

    def off(lm, encoded, intervention, m, *args, **kwargs):
        if intervention is not None and intervention.form == form:
            m = 0.0  # this form's steering lost on the fast path
        return evaluate(lm, encoded, intervention, m, *args, **kwargs)

    monkeypatch.setattr(selfcheck, "evaluate", off)
    with pytest.raises(SteerfrontError) as info:
        self_check(tiny_lm)
    middle = tiny_lm.n_layers // 2
    assert f"on probe 2 ({form} at layer {middle}, m=2) steerfront's fast path gives L_p" in str(
        info.value
    )


@pytest.mark.parametrize(
    "failure",
    [
        lambda: (_ for _ in ()).throw(torch.OutOfMemoryError("CUDA out of memory")),
        lambda: torch.no_such_function(),
        lambda: (_ for _ in ()).throw(RuntimeError("a kernel failed")),
    ],
    ids=["out of memory", "missing torch function", "kernel"],
)
def test_self_check_reports_only_layout_errors_as_layout(tiny_lm, monkeypatch, failure):
    import steerfront.scoring.selfcheck as selfcheck

    monkeypatch.setattr(selfcheck, "evaluate", lambda *args, **kwargs: failure())
    with pytest.raises(Exception) as info:
        self_check(tiny_lm)
    assert not isinstance(info.value, SteerfrontError)
    assert type(info.value) in (torch.OutOfMemoryError, AttributeError, RuntimeError)


def test_self_check_probes_every_form_at_the_middle_layer(tiny_lm, monkeypatch):
    import steerfront.scoring.selfcheck as selfcheck

    seen = []

    def spy(lm, encoded, intervention, m, *args, **kwargs):
        seen.append(None if intervention is None else (intervention.form, intervention.layer, m))
        return evaluate(lm, encoded, intervention, m, *args, **kwargs)

    monkeypatch.setattr(selfcheck, "evaluate", spy)
    self_check(tiny_lm)
    assert seen == [None, *((form, tiny_lm.n_layers // 2, 2.0) for form in FORMS)]


def test_self_check_passes_on_the_tiny_models_in_fp32_and_bf16(tiny_lm_bf16):
    """(Loading no longer checks: what every test model's load once checked, checked here.)"""
    from steerfront.lm import load_model

    assert self_check(load_model(tiny_lm_bf16.spec, device="cpu", dtype=torch.float32)) < 1e-3
    assert self_check(tiny_lm_bf16) < 0.2
