import numpy as np
import pytest
import torch
from conftest import tiny_tokenizer

from steerfront.data import PairSet, load_concept
from steerfront.defaults import CONCEPT_INSTRUCTIONS, concept_instruction
from steerfront.scoring.judge.local import (
    REFERENCE,
    TOP_K,
    LocalJudge,
    Probe,
    Reader,
    fit_probe,
    repeated_share,
    repetition,
    token_ngram,
    words,
)

# Written for these tests: steered garbage in the style seen on agreeableness, one long "word"
# ("Yesnonoh", then "kinininh" six times: from position 7 on, "hkininin" over and over), and a
# fluent sentence that repeats nothing
GARBLED = "Yesnonoh" + "kinininh" * 6
FLUENT = "The bakery on our street opens early, and its bread is still warm when I walk past."


def test_read_scores_each_row_as_its_own_forward(tiny_lm):
    """Rows of several lengths batched and padded together score as each alone: per token its
    log-probability and whether it is in the top TOP_K."""
    contexts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    texts = [[20, 21], [22], [], [23, 24, 25]]
    reader = Reader(tiny_lm)
    reader.layer = 1
    logp, plausible, states = reader._read(contexts, texts, with_logits=True)
    np.testing.assert_array_equal(reader._read(contexts, texts, with_logits=False)[2], states)
    assert [len(x) for x in logp] == [2, 1, 0, 3]
    for i, (context, text) in enumerate(zip(contexts, texts, strict=True)):
        if not text:
            assert not states[i].any()
            continue
        ids = torch.tensor([context + text])
        with torch.no_grad():
            out = tiny_lm.model(input_ids=ids, output_hidden_states=True, use_cache=False)
        a = len(context)
        logprobs = torch.log_softmax(out.logits[0, a - 1 : -1].float(), dim=-1)
        picked = logprobs.gather(1, ids[0, a:, None])[:, 0]
        np.testing.assert_allclose(logp[i], picked.numpy(), atol=1e-4)
        rank = (logprobs > picked[:, None]).sum(-1)
        assert plausible[i].tolist() == (rank < TOP_K).tolist()
        mean = out.hidden_states[2][0, a:].float().mean(0).numpy()
        np.testing.assert_allclose(states[i], mean, atol=1e-4)


@pytest.mark.parametrize(
    ("text", "share"),
    [
        ("the cat sat on the mat", 0.0),  # 4 trigrams, none repeated
        ("a b c a b c", 0.25),  # abc bca cab abc: one of four repeated
        ("go go go go go", 2 / 3),  # three trigrams, all (go go go): two repeats
        ("\n\n\n\n", 0.5),  # line breaks count: two trigrams, one repeated
        ("hi there", 0.0),  # too short for a trigram
    ],
)
def test_repeated_share_on_texts_with_known_answers(text, share):
    assert repeated_share(words(text)) == pytest.approx(share)


def test_repeated_share_counts_token_ngrams_of_any_length():
    assert repeated_share([1, 2, 3, 1, 2, 3]) == pytest.approx(0.25)  # as "a b c a b c"
    # 1234 2341 3412 4123 1234: one of five repeated
    assert repeated_share([1, 2, 3, 4, 1, 2, 3, 4], 4) == pytest.approx(0.2)
    assert repeated_share([1, 2, 3], 4) == 0.0


def test_token_ngram_spans_three_words_of_the_tokenizers_text():
    """A tokenizer with a token per word (or mark) reads trigrams; the byte-level tiny one
    reads REFERENCE's 272 bytes for its 61 words and marks, so 13-grams (3 x 272 / 61)."""

    def one_per_word(text: str, add_special_tokens: bool) -> dict:
        return {"input_ids": list(range(len(words(text))))}

    assert token_ngram(one_per_word) == 3
    assert len(REFERENCE) == 272 and len(words(REFERENCE)) == 61
    assert token_ngram(tiny_tokenizer()) == 13


def test_repetition_catches_a_loop_inside_one_word_and_a_loop_of_line_breaks():
    """GARBLED is one word (no word trigram); on the byte-level tokenizer (13-grams) its 56
    bytes give 44 13-grams, of which those starting at 15 or later repeat the one 8 bytes
    before: 29 of 44. A run of line breaks counts at the word level even when the tokenizer
    makes it one token. FLUENT repeats nothing at either level."""
    tok = tiny_tokenizer()
    ids = tok(GARBLED, add_special_tokens=False)["input_ids"]
    assert len(ids) == 56 and repeated_share(words(GARBLED)) == 0.0
    assert repetition(GARBLED, ids, 13) == pytest.approx(29 / 44)
    assert repetition("\n\n\n\n", [7], 3) == pytest.approx(0.5)
    assert repetition(FLUENT, tok(FLUENT, add_special_tokens=False)["input_ids"], 13) == 0.0


def test_the_judge_scores_a_loop_inside_one_word_as_repeated_and_not_fluent(tiny_lm):
    """On a tiny model (byte-level tokenizer): the garbled text's repetition is 29/44 as
    above, the fluent sentence's 0, and fluency is plausibility times (1 - repetition)."""
    judge = LocalJudge(tiny_lm, PairSet("few", load_concept("agreeableness").pairs[:4]))
    assert judge.reader.ngram == 13
    prompt = "Would you say that you enjoy helping others?"
    garbled, fluent = judge.score([(prompt, GARBLED), (prompt, FLUENT)])
    assert garbled["repetition"] == pytest.approx(29 / 44) and fluent["repetition"] == 0.0
    assert garbled["fluency"] == pytest.approx(garbled["plausibility"] * (1 - 29 / 44))
    assert garbled["fluency"] <= 1 - 29 / 44
    assert fluent["fluency"] == pytest.approx(fluent["plausibility"])


def test_probe_learns_the_labels_it_is_given_not_their_opposite():
    """Two clusters, positive at +1 and negative at -1 along the first axis: the probe says
    positive for new points near +1, and with swapped labels it says the opposite."""
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(1, 0.3, (40, 4)), rng.normal(-1, 0.3, (40, 4))]
    x[:, 1:] = rng.normal(0, 1, (80, 3))
    y = np.r_[np.ones(40), np.zeros(40)]
    fit = np.arange(80) % 4 != 0
    probe = Probe.fit(x, y, fit, ~fit)
    assert probe.accuracy == 1.0
    near = np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
    assert probe.predict(near)[0] > 0.9 > 0.1 > probe.predict(near)[1]
    swapped = Probe.fit(x, 1 - y, fit, ~fit)
    assert swapped.predict(near)[0] < 0.1


def test_fit_probe_measures_on_held_out_generations_and_drops_empty_ones():
    """Training completions at +-1 along the first axis, examples likewise: the probe is
    measured on the examples of held-out prompts only; an empty example (NaN, as
    `Reader.states` gives it) is neither fitted nor measured; without examples it is measured
    on held-out training pairs."""
    train = PairSet("few", load_concept("agreeableness").pairs[:16])
    prompts = [f"prompt {i}" for i in range(12)]
    examples = [{"prompt": p, "polarity": s, "text": "x"} for p in prompts for s in "+-"]
    rng = np.random.default_rng(0)
    signs = [1.0] * 16 + [-1.0] * 16 + [1.0 if e["polarity"] == "+" else -1.0 for e in examples]
    states = rng.normal(0, 0.3, (len(signs), 4))
    states[:, 0] += signs
    probe = fit_probe(train, examples, states, seed=0)
    assert probe.on == "generations" and probe.accuracy == 1.0
    assert probe.held_out == 6  # 3 of 12 prompts held out, both answers each
    states[32] = np.nan  # the first example's answer was empty
    emptied = fit_probe(train, examples, states, seed=0)
    assert emptied.held_out in (5, 6) and np.isfinite(emptied.weight).all()
    plain = fit_probe(train, [], states[:32], seed=0)
    assert plain.on == "training pairs" and plain.held_out == 2 * max(1, int(16 * 0.25))


def test_concept_instruction_asks_for_the_concept_and_for_its_opposite():
    for name, both in CONCEPT_INSTRUCTIONS.items():
        assert concept_instruction(name, "+") == both["+"] != both["-"]
    assert "positive sentiment" in concept_instruction("sentiment", "+").lower()
    assert "negative" in concept_instruction("sentiment", "-")
    own = concept_instruction("speaking like a pirate", "+")
    assert own.endswith("speaking like a pirate.") and "opposite" not in own
    assert "opposite of this: speaking like a pirate" in concept_instruction(
        "speaking like a pirate", "-"
    )
    with pytest.raises(ValueError):
        concept_instruction("sentiment", "positive")
