from types import SimpleNamespace

import numpy as np
import pytest
import torch

from steerfront.defaults import CONCEPT_INSTRUCTIONS, concept_instruction
from steerfront.scoring.judge.local import TOP_K, Probe, repeated_share


def test_read_scores_each_row_as_its_own_forward(tiny_lm):
    """Rows of several lengths batched and padded together score as each alone: per token its
    log-probability and whether it is in the top TOP_K."""
    from steerfront.scoring.judge.local import LocalJudge

    contexts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    texts = [[20, 21], [22], [], [23, 24, 25]]
    judge = SimpleNamespace(lm=tiny_lm, layer=1)
    logp, plausible, states = LocalJudge._read(judge, contexts, texts, True)
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
    assert repeated_share(text) == pytest.approx(share)


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
