from contextlib import nullcontext

import pytest
import torch

from steerfront.data import render_prompt
from steerfront.lm import load_model
from steerfront.methods import init_intervention
from steerfront.methods.generate import _decode, generate, generate_rows


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def vector(lm):
    intervention = init_intervention("vector", lm, 1)
    intervention.params["v"] += torch.linspace(-3, 3, lm.hidden_size)
    return intervention


def one_row(lm, prompt, max_new_tokens, intervention=None, m=0.0):
    """Greedy answer of a batch of one, steered at `m` if an intervention is given."""
    ids = lm.tokenizer(render_prompt(lm.tokenizer, prompt), return_tensors="pt")["input_ids"]
    with intervention.attached(lm, m=m) if intervention else nullcontext():
        out = lm.model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False)
    return _decode(lm, out[0, ids.shape[1] :].tolist())


def test_one_batch_gives_the_unsteered_answer_and_each_ms_as_alone(lm, vector):
    ms = [1.0, -2.0, 4.0]
    unsteered, steered = generate(lm, "hi there", vector, ms, max_new_tokens=6)
    assert unsteered == one_row(lm, "hi there", 6)
    assert steered == [one_row(lm, "hi there", 6, vector, m) for m in ms]
    assert len({unsteered, *steered}) > 1  # the strengths do differ


def test_sampling_is_seeded(lm, vector):
    def sampled(seed):
        return generate(lm, "hi", vector, [1.0, 2.0], 8, temperature=1.5, seed=seed)

    assert sampled(3) == sampled(3)
    assert sampled(3) != sampled(4)
    assert generate(lm, "hi", vector, [1.0], 8) != sampled(3)  # greedy is another answer


def test_a_row_that_ends_early_stops_at_its_end(lm, vector, monkeypatch):
    eos = lm.tokenizer.eos_token_id
    a, b = lm.tokenizer.convert_tokens_to_ids(["a", "b"])
    monkeypatch.setattr(lm.model.generation_config, "eos_token_id", eos)

    def finished_early(input_ids, **kwargs):
        new = torch.tensor([[a, eos, 0, 0], [a, b, a, b]])  # row 0 padded with id 0 ("!")
        return torch.cat([input_ids, new], dim=1)

    monkeypatch.setattr(lm.model, "generate", finished_early)
    assert generate(lm, "hi", vector, [1.0], 4) == ("a", ["abab"])


def test_a_pad_id_of_zero_reaches_generate_and_only_a_missing_one_falls_back_to_eos(
    lm, vector, monkeypatch
):
    eos = lm.tokenizer.eos_token_id
    pad = lm.tokenizer.pad_token
    lm.tokenizer.pad_token = lm.tokenizer.convert_ids_to_tokens(0)
    assert lm.tokenizer.pad_token_id == 0 and eos != 0
    seen = []
    original = lm.model.generate

    def recording(**kwargs):
        seen.append(kwargs["pad_token_id"])
        return original(**kwargs)

    monkeypatch.setattr(lm.model, "generate", recording)
    try:
        generate(lm, "hi", vector, [1.0, 2.0], max_new_tokens=2)  # one batch for all rows
        assert seen == [0]
        lm.tokenizer.pad_token = None
        generate(lm, "hi", vector, [1.0], max_new_tokens=2)
        assert lm.tokenizer.pad_token_id is None and seen[1:] == [eos]
    finally:
        lm.tokenizer.pad_token = pad


def test_one_batch_of_prompts_and_strengths_answers_as_each_row_alone(tiny_lm):
    """Left padding and a per-row m change nothing: every row of a mixed batch (prompts of
    different lengths, several m, the unsteered m = 0) is the answer that row gets alone."""
    torch.manual_seed(1)
    intervention = init_intervention("vector", tiny_lm, 1)
    intervention.params["v"] = torch.randn(tiny_lm.hidden_size)
    prompts = ["hi", "a longer prompt here", "mid size", "hi"]
    m = [0.0, 2.0, -3.0, 5.0]
    batched = generate_rows(tiny_lm, prompts, intervention, m, max_new_tokens=8)
    alone = [generate_rows(tiny_lm, [p], intervention, [v], max_new_tokens=8)[0]
             for p, v in zip(prompts, m, strict=True)]  # fmt: skip
    assert batched == alone
    assert batched[0] != batched[3]  # same prompt, another m: steering shows
    unsteered = generate_rows(tiny_lm, prompts[:1], None, [0.0], max_new_tokens=8)
    assert unsteered == batched[:1]


def test_rows_sampling_is_seeded(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)
    args = (lm, ["hi", "hi"], None, [0.0, 0.0])
    first = generate_rows(*args, max_new_tokens=6, temperature=1.0, seed=3)
    again = generate_rows(*args, max_new_tokens=6, temperature=1.0, seed=3)
    other = generate_rows(*args, max_new_tokens=6, temperature=1.0, seed=4)
    assert first == again and first != other


def test_a_sampled_row_does_not_depend_on_the_rows_batched_with_it(talking_model_dir, monkeypatch):
    """Sampling draws per row: each row alone, the rows in any order, or the batch cut into
    single rows (the memory's budget at one row) give every row the same answer."""
    from steerfront import memory

    lm = load_model(str(talking_model_dir), device="cpu", dtype=torch.float32)
    torch.manual_seed(2)
    intervention = init_intervention("vector", lm, 1)
    intervention.params["v"] = torch.randn(lm.hidden_size)
    prompts, m = ["hi", "a longer prompt", "hi", "hi"], [0.0, 1.0, 3.0, 0.0]
    kwargs = dict(max_new_tokens=8, temperature=1.0, seed=11)
    together = generate_rows(lm, prompts, intervention, m, **kwargs)
    backwards = generate_rows(lm, prompts[::-1], intervention, m[::-1], **kwargs)
    assert backwards[::-1][1:3] == together[1:3]  # (the two "hi" at 0 swap their samples)
    assert sorted([backwards[0], backwards[3]]) == sorted([together[0], together[3]])
    alone = [
        generate_rows(lm, [p], intervention, [v], **kwargs)[0]
        for p, v in zip(prompts, m, strict=True)
    ]
    assert alone[:3] == together[:3] and together[3] != together[0]  # a repeat: another sample
    monkeypatch.setattr(memory, "CPU_ROWS", 1)
    assert generate_rows(lm, prompts, intervention, m, **kwargs) == together
