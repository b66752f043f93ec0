from conftest import tiny_tokenizer

from steerfront.data import PairSet, PolarityPair, encode_pairs, render_prompt

PAIRS = PairSet("t", (PolarityPair("Say yes?", " Yes", " No"), PolarityPair("Hi", "Hello!", "Go")))


def test_chat_prompt_and_exact_spans():
    tokenizer = tiny_tokenizer()
    rendered = render_prompt(tokenizer, "Say yes?")
    assert rendered == "<|user|>Say yes?<|end|><|assistant|>"
    first = encode_pairs(tokenizer, PAIRS)[0]
    assert tokenizer.decode(first.prompt) == rendered
    start, end = first.positive_span
    sequence = first.prompt + first.positive
    assert tokenizer.decode(sequence[start:end]) == "Yes"  # assistant turn: no leading space
    assert tokenizer.decode((first.prompt + first.negative)[slice(*first.negative_span)]) == "No"
    assert first.prompt_span == (0, len(first.prompt))


def test_without_chat_template_the_raw_prompt_is_used():
    tokenizer = tiny_tokenizer(chat_template=None)
    encoded = encode_pairs(tokenizer, PAIRS)[0]
    assert tokenizer.decode(encoded.prompt, skip_special_tokens=True) == "Say yes?"
    assert tokenizer.decode(encoded.positive) == " Yes"
