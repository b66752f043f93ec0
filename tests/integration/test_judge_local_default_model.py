"""The local judge's metrics on the default model, against texts whose answer is known: answers
written for this test by a person (fluent, on their prompt), the same with a loop spliced in,
their words shuffled, each read after another prompt, and garbled text looping inside long
"words" as a steered model wrote on agreeableness."""

import random

import numpy as np
import pytest

from steerfront.data import load_concept
from steerfront.lm import load_model
from steerfront.methods.generate import generate_rows
from steerfront.scoring.judge.local import LocalJudge, probe_examples

pytestmark = pytest.mark.integration

PROMPTS = [
    "Write a short review of a coffee shop you visited recently.",
    "Describe your experience with a new smartphone you bought.",
    "Write a short review of a movie you watched last week.",
    "Tell me about a hotel you stayed at on your last trip.",
    "Write a brief review of a book you read this month.",
    "Describe a restaurant meal you had with friends.",
]
HUMAN = [  # written for this test, about as long as the model's 64-token answers
    "The coffee shop on the corner is small but cozy. The espresso was strong and smooth, and "
    "the barista took time to explain the different beans. I sat by the window with a croissant "
    "and stayed for an hour. Prices are a little high, but the quality makes up for it.",
    "I bought the new phone a month ago and I am mostly happy with it. The screen is bright and "
    "sharp, the battery easily lasts a full day, and the camera takes clear photos even in low "
    "light. The only downside is that it feels slippery without a case.",
    "Last week I watched a quiet drama about two sisters who reunite after many years. The "
    "acting was excellent, especially in the small moments, and the music fit the story well. "
    "The middle part felt slow, but the ending was moving and stayed with me.",
    "On my last trip I stayed at a small hotel near the old town. The room was clean and quiet, "
    "the bed was comfortable, and the staff at the front desk were friendly and helpful. "
    "Breakfast was simple but fresh, and the location made it easy to walk everywhere.",
    "This month I read a novel about a family running a farm through a hard winter. The writing "
    "is clear and warm, and the characters feel like real people. Some chapters move slowly, but "
    "the story builds to a satisfying end. I would recommend it to anyone who enjoys gentle "
    "stories.",
    "Last Friday I had dinner with friends at a family-run Italian restaurant. We shared a plate "
    "of fresh bread, then I had a bowl of pasta with tomato and basil that tasted homemade. The "
    "service was friendly, the room was lively, and we stayed talking long after dessert.",
]
GARBLED = [  # written for this test, in the style of a steered point's answers on agreeableness
    "Yesnonoinnoinma.Nonoiinma.Nonoiinma?Nonoiinma.Nonoiinma.Nonoiinma?Nonoiinma.Nonoiinma.",
    "Yesnonohkininininininhkinininhkinininhkinininhkinininhkinininhkinininhkinininhk",  # one word
    "Nonohxreininhinhinhinhinhinhinhk.Nonohhnoiinhnoiinhk.Nonohhnoiinhnoiinhk.Nonohh",
]
POSITIVE = "The hotel was wonderful: a spotless room, a lovely view and the kindest staff."
NEGATIVE = "The hotel was awful: a dirty room, a noisy street and the rudest staff."


def looped(text: str) -> str:
    """The first half of `text`, then its last six words four more times (a loop)."""
    words = text.split()
    half = len(words) // 2
    return " ".join(words[:half] + words[half - 6 : half] * 4)


def shuffled(text: str) -> str:
    words = text.split()
    random.Random(0).shuffle(words)
    return " ".join(words)


@pytest.fixture(scope="module")
def lm():
    return load_model()


@pytest.fixture(scope="module")
def scored(lm):
    judge = LocalJudge(lm, load_concept("sentiment").split().train)
    unsteered = generate_rows(lm, PROMPTS, None, [0.0] * len(PROMPTS), 64)
    other = PROMPTS[1:] + PROMPTS[:1]
    kinds = {
        "unsteered": list(zip(PROMPTS, unsteered, strict=True)),
        "human": list(zip(PROMPTS, HUMAN, strict=True)),
        "looped": [(p, looped(t)) for p, t in zip(PROMPTS, HUMAN, strict=True)],
        "shuffled": [(p, shuffled(t)) for p, t in zip(PROMPTS, HUMAN, strict=True)],
        "other_prompt": list(zip(other, HUMAN, strict=True)),
        "garbled": list(zip(PROMPTS, GARBLED, strict=False)),
        "concept": [(PROMPTS[3], POSITIVE), (PROMPTS[3], NEGATIVE)],
    }
    out = {kind: judge.score(pairs) for kind, pairs in kinds.items()}
    for kind, scores in out.items():  # the measured numbers, for the README (pytest -s)
        print(kind, {k: round(float(np.mean([s[k] for s in scores])), 3) for k in scores[0]})
    return out


def mean(scores: list[dict], key: str) -> float:
    return float(np.mean([s[key] for s in scores]))


def test_fluent_human_answers_score_as_the_unsteered_models_own(scored):
    """Plausibility (fluency before repetition) of the human answers is within 0.05 of the
    unsteered model's greedy answers'; fluency too, against those of its answers that do not
    loop (two of its six 64-token answers repeat a phrase, and lose fluency for it)."""
    human, unsteered = scored["human"], scored["unsteered"]
    assert abs(mean(human, "plausibility") - mean(unsteered, "plausibility")) <= 0.05
    fresh = [s for s in unsteered if s["repetition"] < 0.05]
    assert len(fresh) >= 3
    assert abs(mean(human, "fluency") - mean(fresh, "fluency")) <= 0.05
    assert mean(unsteered, "fluency") <= mean(fresh, "fluency")


def test_a_loop_costs_fluency_and_shuffled_words_cost_more(scored):
    human, loop = mean(scored["human"], "fluency"), mean(scored["looped"], "fluency")
    assert loop <= human - 0.3
    assert mean(scored["shuffled"], "fluency") < loop


def test_a_loop_inside_long_words_is_repetition_and_costs_fluency(scored, lm):
    """Garbled text the model finds plausible token by token (it copies its own context): its
    token trigrams repeat (the default tokenizer takes about a token a word, so trigrams), even
    in the one long "word" without any word trigram, so it loses at least half its fluency,
    while the human answers repeat almost nothing."""
    from steerfront.scoring.judge.local import repeated_share, token_ngram, words

    assert token_ngram(lm.tokenizer) == 3
    assert repeated_share(words(GARBLED[1])) == 0.0
    garbled, human = scored["garbled"], scored["human"]
    assert all(s["repetition"] >= 0.5 for s in garbled)
    assert all(s["repetition"] <= 0.05 for s in human)
    assert mean(garbled, "fluency") <= mean(human, "fluency") - 0.5


def test_an_answer_to_another_prompt_follows_its_instruction_less(scored):
    own, other = scored["human"], scored["other_prompt"]
    assert mean(other, "instruction") < mean(own, "instruction")
    assert mean(other, "pmi") < mean(own, "pmi")


def test_the_probe_tells_a_positive_review_from_a_negative_one(scored):
    positive, negative = scored["concept"]
    assert positive["concept"] > 0.5 > negative["concept"]


def test_the_probe_fitted_on_generations_tells_held_out_generations_apart(lm):
    """The unsteered model's own answers asked for positive and negative sentiment: the probe
    fitted on three quarters of the prompts' answers reads the other quarter's."""
    train = load_concept("sentiment").split().train
    examples = probe_examples(lm, train, "sentiment")
    assert {e["polarity"] for e in examples} == {"+", "-"} and len(examples) == 48
    judge = LocalJudge(lm, train, 0, examples)
    print("probe on generations:", judge.probe.accuracy, "over", judge.probe.held_out)
    assert judge.probe.on == "generations" and judge.probe.held_out >= 10
    assert judge.probe.accuracy >= 0.8
    positive, negative = judge.score([(PROMPTS[3], POSITIVE), (PROMPTS[3], NEGATIVE)])
    assert positive["concept"] > 0.5 > negative["concept"]
