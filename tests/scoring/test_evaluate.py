from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import BF16_VS_FP32

from steerfront import forward, memory
from steerfront.data import PairSet, PolarityPair, encode_pairs, load_concept
from steerfront.errors import SteerfrontError
from steerfront.memory import MemoryCache
from steerfront.methods import FORMS, init_intervention
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.reference import reference_nll

MIXED = PairSet(
    "mixed",
    load_concept("agreeableness").pairs[:3]  # multi-token completions under the byte tokenizer
    + load_concept("sentiment").pairs[:3]
    + (PolarityPair("Pick one letter.", "A", "B"), PolarityPair("Say a digit", "1", "2")),
)
GRID = [-2.0, -0.5, 0.0, 1.0, 3.0]
PREAMBLE = "You are a careful assistant. Answer briefly.\n"


def prompts_of(kind, lm, monkeypatch):
    """MIXED encoded with prompts that share one template token, a long preamble, or nothing."""
    pairs = MIXED
    if kind == "preamble":
        pairs = PairSet("preamble", [replace(p, prompt=PREAMBLE + p.prompt) for p in MIXED])
    if kind == "nothing":
        monkeypatch.setattr(lm.tokenizer, "chat_template", None)
    encoded = encode_pairs(lm.tokenizer, pairs)
    expected = {"template": 1, "preamble": 1 + len(PREAMBLE), "nothing": 0}[kind]
    assert forward.shared_prompt_length(encoded) == expected  # one token per byte
    return encoded


def random_intervention(lm, form, layer):
    intervention = init_intervention(form, lm, layer, rank=2)
    generator = torch.Generator().manual_seed(1)
    for tensor in intervention.params.values():
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return intervention


def reference(lm, encoded, intervention, m, per_token=False):
    rows = []
    for e in encoded:
        if intervention is None:
            rows.append([reference_nll(lm, e, p, per_token) for p in (True, False)])
            continue
        intervention.m = m
        with intervention.attached(lm):
            rows.append([reference_nll(lm, e, p, per_token) for p in (True, False)])
    return np.array(rows)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layer", [1, -1])  # a vector at the last layer leaves only the norm
@pytest.mark.parametrize("tokens_per_batch", [4096, 150])  # one batch; many, trimmed per step
@pytest.mark.parametrize("prompts", ["template", "preamble", "nothing"])  # the shared prompt
def test_equals_the_plain_reference(tiny_lm, form, layer, tokens_per_batch, prompts, monkeypatch):
    monkeypatch.setattr(memory, "CPU_TOKENS", tokens_per_batch)
    monkeypatch.setattr(forward, "LOGITS_PER_CHUNK", 7 * len(tiny_lm.tokenizer))  # many chunks
    encoded = prompts_of(prompts, tiny_lm, monkeypatch)
    single = [i for i, e in enumerate(encoded) if len(e.positive) == len(e.negative) == 1]
    assert single and len(single) < len(encoded)  # both kinds present
    intervention = random_intervention(tiny_lm, form, layer=layer % tiny_lm.n_layers)
    scores = evaluate(tiny_lm, encoded, intervention, GRID)
    for m in GRID:
        expected = reference(tiny_lm, encoded, intervention, m)
        rows = scores.m == m
        np.testing.assert_allclose(scores.l_p[rows], expected[:, 0], atol=1e-4, rtol=0)
        np.testing.assert_allclose(scores.l_n[rows], expected[:, 1], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(scores.pair[rows], np.arange(len(encoded)))
    assert scores.table().num_rows == len(encoded) * len(GRID)


def test_per_token_variant(tiny_lm):
    encoded = encode_pairs(tiny_lm.tokenizer, MIXED)
    intervention = random_intervention(tiny_lm, "vector", layer=2)
    scores = evaluate(tiny_lm, encoded, intervention, [-1.0], per_token=True)
    expected = reference(tiny_lm, encoded, intervention, -1.0, per_token=True)
    np.testing.assert_allclose(scores.l_p, expected[:, 0], atol=1e-5, rtol=0)


def test_unsteered_and_m_zero_agree(tiny_lm):
    encoded = encode_pairs(tiny_lm.tokenizer, MIXED)
    unsteered = evaluate(tiny_lm, encoded, None, [0.0, 1.0])
    expected = reference(tiny_lm, encoded, None, None)
    np.testing.assert_allclose(unsteered.l_p[::2], expected[:, 0], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(unsteered.l_p[::2], unsteered.l_p[1::2])
    at_zero = evaluate(tiny_lm, encoded, random_intervention(tiny_lm, "lora", 1), 0.0)
    np.testing.assert_allclose(at_zero.l_n, expected[:, 1], atol=1e-4, rtol=0)


def test_evaluation_leaves_m_and_the_model_as_they_were(tiny_lm):
    encoded = encode_pairs(tiny_lm.tokenizer, MIXED)
    intervention = random_intervention(tiny_lm, "vector", layer=1)
    intervention.m = 0.25
    hooks = dict(tiny_lm.layers[1]._forward_hooks)
    evaluate(tiny_lm, encoded, intervention, GRID)
    assert intervention.m == 0.25
    assert dict(tiny_lm.layers[1]._forward_hooks) == hooks


def test_prefix_cache_is_reused(tiny_lm):
    encoded = encode_pairs(tiny_lm.tokenizer, MIXED)
    cache = MemoryCache(1 << 30)
    intervention = random_intervention(tiny_lm, "vector", layer=1)
    first = evaluate(tiny_lm, encoded, intervention, GRID, cache=cache)
    again = evaluate(tiny_lm, encoded, intervention, GRID, cache=cache)
    evaluate(tiny_lm, encoded, random_intervention(tiny_lm, "vector", 2), 1.0, cache=cache)
    assert len(cache) == 2
    np.testing.assert_array_equal(first.l_p, again.l_p)


@pytest.mark.parametrize(
    "grid,message",
    [([], "m-grid is empty"), ([1.0, float("nan")], "m must be finite, not nan")],
)
def test_bad_grids(tiny_lm, grid, message):
    encoded = encode_pairs(tiny_lm.tokenizer, MIXED)
    with pytest.raises(SteerfrontError, match=message):
        evaluate(tiny_lm, encoded, None, grid)


def test_no_pairs(tiny_lm):
    with pytest.raises(SteerfrontError, match="no pairs to score"):
        evaluate(tiny_lm, [], None, 1.0)


def test_end_of_turn_completions_equal_the_plain_reference(tiny_lm):
    plain = encode_pairs(tiny_lm.tokenizer, MIXED)
    ended = encode_pairs(tiny_lm.tokenizer, MIXED, end_of_turn=True)
    assert [len(e.positive) for e in ended] == [len(e.positive) + 1 for e in plain]
    intervention = random_intervention(tiny_lm, "vector", layer=1)
    scores = evaluate(tiny_lm, ended, intervention, [0.0, 2.0])
    for m in (0.0, 2.0):
        expected = reference(tiny_lm, ended, intervention, m)
        np.testing.assert_allclose(scores.l_p[scores.m == m], expected[:, 0], atol=1e-4, rtol=0)
        np.testing.assert_allclose(scores.l_n[scores.m == m], expected[:, 1], atol=1e-4, rtol=0)
    # The end of turn adds its own NLL: each score is the plain one plus a positive amount.
    without = evaluate(tiny_lm, plain, intervention, [0.0, 2.0])
    assert (scores.l_p > without.l_p).all() and (scores.l_n > without.l_n).all()


# The fast path in bf16 against the plain reference in bf16 (CPU), per completion: measured at
# most 0.001 nats on the tiny models (every architecture and form).
BF16_ATOL = 0.01


@pytest.mark.parametrize("form", FORMS)
def test_bf16_equals_the_plain_reference(tiny_lm_bf16, form):
    encoded = encode_pairs(tiny_lm_bf16.tokenizer, MIXED)
    intervention = random_intervention(tiny_lm_bf16, form, layer=1)
    assert {t.dtype for t in intervention.params.values()} == {torch.float32}
    scores = evaluate(tiny_lm_bf16, encoded, intervention, GRID)
    for m in GRID:
        expected = reference(tiny_lm_bf16, encoded, intervention, m)
        rows = scores.m == m
        np.testing.assert_allclose(scores.l_p[rows], expected[:, 0], atol=BF16_ATOL, rtol=0)
        np.testing.assert_allclose(scores.l_n[rows], expected[:, 1], atol=BF16_ATOL, rtol=0)


@pytest.mark.parametrize("form", FORMS)
def test_bf16_agrees_with_fp32_on_the_same_weights(tiny_lm_bf16, form):
    from steerfront.lm import load_model

    fp32 = load_model(tiny_lm_bf16.spec, device="cpu", dtype=torch.float32)
    encoded = encode_pairs(fp32.tokenizer, MIXED)
    intervention = random_intervention(fp32, form, layer=1)
    ours = evaluate(tiny_lm_bf16, encoded, intervention, GRID)
    want = evaluate(fp32, encoded, intervention, GRID)
    np.testing.assert_allclose(ours.pref, want.pref, atol=BF16_VS_FP32, rtol=0)
    np.testing.assert_allclose(ours.util, want.util, atol=BF16_VS_FP32, rtol=0)
    # Steering moves the scores far more than the bound: bf16 steers as fp32 does.
    moved = np.abs(want.l_p[want.m == 3.0] - want.l_p[want.m == 0.0]).max()
    assert moved > 5 * BF16_VS_FP32
