import pytest
from conftest import tiny_tokenizer

from steerfront.data import PairSet, PolarityPair, encode_pairs, end_of_turn_tokens, render_prompt
from steerfront.errors import SteerfrontError

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


def rendered_turn(tokenizer, prompt, answer):
    """Token ids of one user turn and one assistant answer as the chat template renders them."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_end_of_turn_makes_the_scored_sequence_the_rendered_answer_turn():
    tokenizer = tiny_tokenizer()
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end_of_turn_tokens(tokenizer) == (end,)
    plain, ended = encode_pairs(tokenizer, PAIRS), encode_pairs(tokenizer, PAIRS, end_of_turn=True)
    for pair, p, e in zip(PAIRS, plain, ended, strict=True):
        assert e.prompt == p.prompt
        assert (e.positive, e.negative) == (p.positive + (end,), p.negative + (end,))
        for answer, completion in ((pair.positive, e.positive), (pair.negative, e.negative)):
            assert e.prompt + completion == rendered_turn(tokenizer, pair.prompt, answer.lstrip())


@pytest.mark.parametrize(  # Jinja source after an answer, what it renders, the end of turn
    "after_answer,renders,expected",
    [
        ("<|end|>{{ '\\n' }}", "<|end|>\n", "<|end|>"),
        ("{{ '\\n' }}<|end|></s>", "\n<|end|></s>", "\n<|end|>"),
    ],
    ids=["newline-between-turns-left-out", "text-before-the-end-kept"],
)
def test_end_of_turn_runs_to_the_first_special_token(after_answer, renders, expected):
    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
        "{% if m['role'] == 'assistant' %}" + after_answer + "{% else %}<|end|>{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tokenizer = tiny_tokenizer(template)
    answered = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes"}]
    assert tokenizer.apply_chat_template(answered, tokenize=False).endswith("Yes" + renders)
    assert tokenizer.decode(end_of_turn_tokens(tokenizer)) == expected


def test_without_chat_template_the_answer_ends_with_eos():
    tokenizer = tiny_tokenizer(chat_template=None)
    assert end_of_turn_tokens(tokenizer) == (tokenizer.eos_token_id,)
    encoded = encode_pairs(tokenizer, PAIRS, end_of_turn=True)[0]
    assert tokenizer.decode(encoded.positive) == " Yes</s>"


@pytest.mark.parametrize(
    "template,message",
    [
        (  # the answer runs on with plain text: nothing marks its end
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}",
            "its chat template shows no end-of-turn token after an answer",
        ),
        (
            "{% for m in messages %}{% if m['role'] == 'assistant' %}"
            "{{ raise_exception('no assistant turns') }}{% endif %}{{ m['content'] }}<|end|>"
            "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
            r"chat template renders no assistant turn \(no assistant turns\)",
        ),
    ],
)
def test_a_template_without_an_end_of_turn_is_refused(template, message):
    tokenizer = tiny_tokenizer(template)
    tokenizer.name_or_path = "tiny/model"
    with pytest.raises(SteerfrontError, match=f"^tiny/model: {message}$"):
        encode_pairs(tokenizer, PAIRS, end_of_turn=True)
    assert encode_pairs(tokenizer, PAIRS)  # the option off needs no end of turn


def test_no_template_and_no_eos_is_refused():
    tokenizer = tiny_tokenizer(chat_template=None)
    tokenizer.eos_token = None
    with pytest.raises(SteerfrontError, match="no chat template and no eos token"):
        end_of_turn_tokens(tokenizer)
