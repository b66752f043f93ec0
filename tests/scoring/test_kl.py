import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from steerfront import forward, memory
from steerfront.data import instructed, render_prompt
from steerfront.data.prompts import builtin_prompts_path, load_prompts, neutral_prompts
from steerfront.errors import SteerfrontError
from steerfront.memory import MemoryCache
from steerfront.methods import FORMS, init_intervention
from steerfront.scoring import kl as kl_module
from steerfront.scoring.kl import (
    KLScores,
    answers_path,
    kl_scores,
    prompted_kl,
    unsteered_answers,
)

PROMPTS = ["Explain rain.", "Name a fruit, then say why.", "Count to five.", "Hi", "Write a line."]
NEW_TOKENS = 12
GRID = [-2.0, -0.5, 0.0, 1.0, 3.0]


@pytest.fixture
def answers(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path))
    return unsteered_answers(tiny_lm, PROMPTS, NEW_TOKENS)


def random_intervention(lm, form, layer, scale=0.3):
    intervention = init_intervention(form, lm, layer, rank=2)
    generator = torch.Generator().manual_seed(1)
    for tensor in intervention.params.values():
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * scale)
    return intervention


@torch.no_grad()
def reference_kl(lm, intervention, m, answers, tokens=None):
    """The plain way: each prompt and its answer alone through the full model, unsteered and
    with the intervention hooked in; torch's kl_div on the full log-softmax."""
    kl, first = [], []
    for prompt, answer in zip(answers.prompt_ids, answers.answer_ids, strict=True):
        answer = answer[:tokens]
        ids = torch.tensor([prompt + answer[:-1]])
        base = lm.model(input_ids=ids).logits[0, len(prompt) - 1 :].float().log_softmax(-1)
        with intervention.attached(lm, m=m):
            steered = lm.model(input_ids=ids).logits[0, len(prompt) - 1 :]
        steered = steered.float().log_softmax(-1)
        per_token = F.kl_div(steered, base, log_target=True, reduction="none").sum(-1)
        kl.append(float(per_token.mean()))
        first.append(float(per_token[0]))
    return np.array(kl), np.array(first)


def test_answers_are_the_models_own_greedy_ones(tiny_lm, answers):
    assert answers.prompts == tuple(PROMPTS)
    assert all(1 <= len(a) <= NEW_TOKENS for a in answers.answer_ids)
    for prompt, answer in zip(answers.prompt_ids, answers.answer_ids, strict=True):
        out = tiny_lm.model.generate(
            input_ids=torch.tensor([prompt]), max_new_tokens=len(answer), do_sample=False
        )
        assert tuple(out[0, len(prompt) :].tolist()) == answer


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layer", [1, -1])  # a vector at the last layer leaves only the norm
@pytest.mark.parametrize("tokens_per_batch", [4096, 60])  # one batch; many, trimmed per step
@pytest.mark.parametrize("kept", [1 << 30, 0])  # unsteered logits kept; states kept
def test_equals_the_plain_reference(
    tiny_lm, answers, form, layer, tokens_per_batch, kept, monkeypatch
):
    monkeypatch.setattr(memory, "CPU_TOKENS", tokens_per_batch)
    monkeypatch.setattr(kl_module, "KEPT_LOGITS_BYTES", kept)
    monkeypatch.setattr(kl_module, "LOGITS_PER_CHUNK", 7 * len(tiny_lm.tokenizer))  # many chunks
    intervention = random_intervention(tiny_lm, form, layer % tiny_lm.n_layers, scale=1.0)
    scores = kl_scores(tiny_lm, intervention, GRID, answers, tokens=None)
    assert scores.kl.shape == scores.kl_first.shape == (len(PROMPTS), len(GRID))
    for j, m in enumerate(GRID):
        kl, first = reference_kl(tiny_lm, intervention, m, answers)
        np.testing.assert_allclose(scores.kl[:, j], kl, atol=1e-5, rtol=0)
        np.testing.assert_allclose(scores.kl_first[:, j], first, atol=1e-5, rtol=0)
        # The tiny models' distributions are flat (kl about 1e-3 here): relatively, too.
        np.testing.assert_allclose(scores.kl[:, j], kl, atol=1e-8, rtol=1e-3)
    assert scores.kl[:, GRID.index(3.0)].mean() > 5e-4  # the test has something to compare


@pytest.mark.parametrize("form", FORMS)
def test_m_zero_is_zero(tiny_lm, answers, form):
    scores = kl_scores(tiny_lm, random_intervention(tiny_lm, form, 1), [0.0, 1.0], answers)
    assert np.abs(scores.kl[:, 0]).max() <= 1e-7
    assert np.abs(scores.kl_first[:, 0]).max() <= 1e-7
    assert (scores.kl[:, 1] > 1e-5).all()
    unsteered = kl_scores(tiny_lm, None, [0.0, 2.0], answers)
    assert not unsteered.kl.any() and not unsteered.kl_first.any()


@pytest.mark.parametrize("form", FORMS)
def test_kl_rises_with_the_strength(tiny_lm, answers, form):
    grid = [-4.0, -2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    mean = kl_scores(tiny_lm, random_intervention(tiny_lm, form, 1), grid, answers).kl.mean(0)
    zero = grid.index(0.0)
    assert (np.diff(mean[zero:]) > 0).all()  # up from m = 0 on either side
    assert (np.diff(mean[: zero + 1]) < 0).all()


@pytest.mark.parametrize("tokens", [1, 5])
def test_the_first_tokens_only(tiny_lm, answers, tokens):
    intervention = random_intervention(tiny_lm, "local_weight", 2, scale=1.0)
    scores = kl_scores(tiny_lm, intervention, GRID, answers, tokens=tokens)
    assert (scores.tokens == [min(tokens, len(a)) for a in answers.answer_ids]).all()
    for j, m in enumerate(GRID):
        kl, first = reference_kl(tiny_lm, intervention, m, answers, tokens)
        np.testing.assert_allclose(scores.kl[:, j], kl, atol=1e-8, rtol=1e-3)
        np.testing.assert_allclose(scores.kl_first[:, j], first, atol=1e-8, rtol=1e-3)


def test_first_token_only_matches_the_full_scoring(tiny_lm, answers):
    intervention = random_intervention(tiny_lm, "lora", 1)
    full = kl_scores(tiny_lm, intervention, GRID, answers, tokens=None)
    first = kl_scores(tiny_lm, intervention, GRID, answers, tokens=1)
    np.testing.assert_allclose(first.kl, first.kl_first, atol=0)
    np.testing.assert_allclose(first.kl_first, full.kl_first, atol=1e-6)
    assert (first.tokens == 1).all() and (full.tokens == [len(a) for a in answers.answer_ids]).all()
    with pytest.raises(SteerfrontError, match="at least 1"):
        kl_scores(tiny_lm, intervention, GRID, answers, tokens=0)


INSTRUCTION = "Answer with a clearly positive sentiment."


@torch.no_grad()
def reference_prompted_kl(lm, answers, instruction):
    """The plain way: each answer after its plain prompt and after the instructed one, each
    alone through the full model; torch's kl_div on the full log-softmax."""
    templated = lm.chat_template is not None
    kl, first = [], []
    for text, answer in zip(answers.prompts, answers.answer_ids, strict=True):
        rows = []
        for prompt in (text, instructed(text, instruction)):
            rendered = render_prompt(lm.tokenizer, prompt)
            ids = lm.tokenizer(rendered, add_special_tokens=not templated)["input_ids"]
            logits = lm.model(input_ids=torch.tensor([ids + list(answer[:-1])])).logits[0]
            rows.append(logits[len(ids) - 1 :].float().log_softmax(-1))
        per_token = F.kl_div(rows[1], rows[0], log_target=True, reduction="none").sum(-1)
        kl.append(float(per_token.mean()))
        first.append(float(per_token[0]))
    return np.array(kl), np.array(first)


@pytest.mark.parametrize("kept", [1 << 30, 0])  # unsteered logits kept; states kept
@pytest.mark.parametrize("tokens_per_batch", [4096, 60])  # one batch; many
def test_prompted_kl_equals_the_plain_reference(
    tiny_lm, answers, kept, tokens_per_batch, monkeypatch
):
    monkeypatch.setattr(memory, "CPU_TOKENS", tokens_per_batch)
    monkeypatch.setattr(kl_module, "KEPT_LOGITS_BYTES", kept)
    scores = prompted_kl(tiny_lm, answers, INSTRUCTION, tokens=None)
    kl, first = reference_prompted_kl(tiny_lm, answers, INSTRUCTION)
    assert scores.kl.shape == scores.kl_first.shape == (len(PROMPTS), 1)
    assert list(scores.m) == [0.0]
    np.testing.assert_allclose(scores.kl[:, 0], kl, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores.kl_first[:, 0], first, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores.kl[:, 0], kl, atol=1e-8, rtol=1e-3)
    assert (scores.tokens == [len(a) for a in answers.answer_ids]).all()
    assert scores.kl.mean() > 1e-4  # the instruction moves the distributions: a real test
    metrics = scores.metrics(seed=0)[0.0]  # kl_scores' means and intervals over prompts
    assert metrics["kl"] == pytest.approx(kl.mean(), abs=1e-6)
    assert metrics["kl_lo"] <= metrics["kl"] <= metrics["kl_hi"]


def test_prompted_kl_is_zero_without_an_instruction(tiny_lm, answers):
    scores = prompted_kl(tiny_lm, answers, "")
    assert np.abs(scores.kl).max() <= 1e-6 and np.abs(scores.kl_first).max() <= 1e-6
    assert (scores.tokens == [min(16, len(a)) for a in answers.answer_ids]).all()


def test_prompted_kl_first_tokens_and_the_shared_cache(tiny_lm, answers, monkeypatch):
    cache = MemoryCache(1 << 30)
    kl_scores(tiny_lm, random_intervention(tiny_lm, "vector", 1), [1.0], answers, cache, 1)
    calls = []
    unsteered = kl_module._unsteered
    monkeypatch.setattr(kl_module, "_unsteered", lambda *a: calls.append(1) or unsteered(*a))
    first = prompted_kl(tiny_lm, answers, INSTRUCTION, cache, tokens=1)
    assert calls == [1]  # the instructed side only: the plain one is the cache's
    full = prompted_kl(tiny_lm, answers, INSTRUCTION, tokens=None)
    np.testing.assert_allclose(first.kl[:, 0], full.kl_first[:, 0], atol=1e-6)
    np.testing.assert_array_equal(first.kl, first.kl_first)


def test_the_frozen_prefix_and_unsteered_states_are_kept(tiny_lm, answers, monkeypatch):
    calls = {"prefix": 0, "unsteered": 0}
    prefix, unsteered = kl_module.frozen_prefix, kl_module._unsteered

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(kl_module, "frozen_prefix", counted("prefix", prefix))
    monkeypatch.setattr(kl_module, "_unsteered", counted("unsteered", unsteered))
    cache = MemoryCache(1 << 30)
    vector, lora = (
        random_intervention(tiny_lm, "vector", 1),
        random_intervention(tiny_lm, "lora", 1),
    )
    first = kl_scores(tiny_lm, vector, [1.0], answers, cache)
    again = kl_scores(tiny_lm, vector, [1.0], answers, cache)
    np.testing.assert_array_equal(first.kl, again.kl)
    assert calls == {"prefix": 1, "unsteered": 1}
    kl_scores(tiny_lm, lora, [1.0, 2.0], answers, cache)  # starts at layer 1, not 2: a new prefix
    assert calls == {"prefix": 2, "unsteered": 1}


@pytest.mark.parametrize("spread", [1.0, 10.0, 60.0])  # 60: logits that rise past expm1's range
def test_kl_from_logits_against_float64(spread):
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 500, generator=generator) * spread
    steered = base[:, None] + torch.randn(6, 3, 500, generator=generator) * spread
    steered[:, 0] = base  # no change: exactly 0
    steered[:, 1] = base + 2.5  # a shift of every logit is no change either
    got = kl_module.kl_from_logits(base, steered)
    p = base.double().log_softmax(-1)[:, None]
    expected = F.kl_div(steered.double().log_softmax(-1), p, log_target=True, reduction="none")
    expected = expected.sum(-1)
    assert got.dtype == torch.float32 and got.shape == (6, 3)
    assert (got[:, 0] == 0).all() and got[:, 1].abs().max() <= 1e-5
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_metrics_have_bootstrap_intervals_over_prompts():
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, size=(20, 3))
    scores = KLScores(np.array([0.5, 1.0, 2.0]), values, values / 2, np.full(20, 48))
    metrics = scores.metrics(seed=0)
    assert list(metrics) == [0.5, 1.0, 2.0]
    for j, m in enumerate(metrics):
        row = metrics[m]
        assert row["kl"] == pytest.approx(values[:, j].mean())
        assert row["kl_first"] == pytest.approx(values[:, j].mean() / 2)
        assert row["kl_lo"] < row["kl"] < row["kl_hi"]
        assert row["kl_first_lo"] < row["kl_first"] < row["kl_first_hi"]
    assert scores.metrics(seed=0) == metrics  # the same draws for the same seed


def test_the_cached_answers_are_used_not_regenerated(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path))
    generated = []
    real = kl_module._generate

    def once(*args, **kwargs):
        if generated:
            raise AssertionError("generated a second time")
        generated.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(kl_module, "_generate", once)
    first = unsteered_answers(tiny_lm, PROMPTS, NEW_TOKENS)
    path = answers_path(first.fingerprint)
    assert path.is_file() and path.parent.parent == tmp_path
    mtime = path.stat().st_mtime_ns
    second = unsteered_answers(tiny_lm, PROMPTS, NEW_TOKENS)
    assert second == first and len(generated) == 1 and path.stat().st_mtime_ns == mtime
    # Another length, seed or prompt set is another entry.
    for other in (
        lambda: unsteered_answers(tiny_lm, PROMPTS, NEW_TOKENS + 1),
        lambda: unsteered_answers(tiny_lm, PROMPTS, NEW_TOKENS, seed=1),
        lambda: unsteered_answers(tiny_lm, PROMPTS[:3], NEW_TOKENS),
    ):
        with pytest.raises(AssertionError, match="second time"):
            other()
    # A damaged entry is made again.
    generated.clear()
    path.write_text("{not json")
    assert unsteered_answers(tiny_lm, PROMPTS, NEW_TOKENS) == first and len(generated) == 1
    assert json.loads(path.read_text())["answer_ids"] == [list(a) for a in first.answer_ids]


def test_the_fingerprint_follows_the_weights(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERFRONT_CACHE", str(tmp_path))
    before = unsteered_answers(tiny_lm, PROMPTS, 2).fingerprint
    weight = tiny_lm.layers[0].mlp.down_proj.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.add_(1.0)
        assert unsteered_answers(tiny_lm, PROMPTS, 2).fingerprint != before
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert unsteered_answers(tiny_lm, PROMPTS, 2).fingerprint == before


def test_the_builtin_set():
    prompts = neutral_prompts()
    assert len(prompts) >= 60 and len(set(prompts)) == len(prompts)
    assert neutral_prompts(count=20) == prompts[:20]
    header = builtin_prompts_path().read_text().splitlines()[:3]
    assert all(line.startswith("#") for line in header)
    assert any("Apache-2.0" in line for line in header)
    assert any("written for steerfront" in line for line in header)
    readme = (builtin_prompts_path().parent / "README.md").read_text()
    assert "Apache-2.0" in readme and "Source" in readme


def test_a_users_prompts_file(tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("# my set\nFirst instruction.\n\n  Second one.  \n")
    assert load_prompts(text) == ["First instruction.", "Second one."]
    lines = tmp_path / "mine.jsonl"
    lines.write_text('{"prompt": "A"}\n\n{"prompt": "B", "meta": 1}\n')
    assert neutral_prompts(lines) == ["A", "B"]
    assert neutral_prompts(lines, count=5) == ["A", "B"]


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("empty.txt", "# only a comment\n\n", "empty.txt: no prompts"),
        ("dup.txt", "Say hi.\nSay bye.\nSay hi.\n", "dup.txt:3: repeats the prompt of line 1"),
        ("bad.jsonl", '{"prompt": "A"}\n{"prompt": \n', "bad.jsonl:2: invalid JSON"),
        ("key.jsonl", '{"prompt": "A"}\n{"text": "B"}\n', "key.jsonl:2: expected an object with"),
        ("list.jsonl", '["A"]\n', "list.jsonl:1: expected an object with"),
        ("blank.jsonl", '{"prompt": "  "}\n', "blank.jsonl:1: expected an object with"),
        ("nul.txt", "Fine.\nBad\x00line\n", "nul.txt:2: contains a NUL"),
    ],
)
def test_a_bad_prompts_file_is_one_line(tmp_path, name, content, where):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SteerfrontError) as error:
        neutral_prompts(path)
    assert where in str(error.value) and "\n" not in str(error.value)


def test_an_unreadable_prompts_file_is_one_line(tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    for path, where in ((latin, "latin.txt: not UTF-8"), (tmp_path / "none.txt", "no such file")):
        with pytest.raises(SteerfrontError, match=where) as error:
            neutral_prompts(path)
        assert "\n" not in str(error.value)
    with pytest.raises(SteerfrontError, match="at least 1"):
        neutral_prompts(count=0)


def test_bad_arguments(tiny_lm, answers):
    with pytest.raises(SteerfrontError, match="empty"):
        kl_scores(tiny_lm, random_intervention(tiny_lm, "vector", 1), [], answers)
    with pytest.raises(SteerfrontError, match="at least 1 token"):
        unsteered_answers(tiny_lm, PROMPTS, 0)
    with pytest.raises(SteerfrontError, match="no neutral prompts"):
        unsteered_answers(tiny_lm, [], 4)


def test_forward_chunking_is_untouched():
    assert forward.LOGITS_PER_CHUNK == kl_module.LOGITS_PER_CHUNK
