import pytest

from steerfront.data import PairSet, PolarityPair, load_concept
from steerfront.data.checks import warnings


def pairs(n, positive="yes", negative="no!"):
    return PairSet("t", tuple(PolarityPair(f"q{i}?", positive, negative) for i in range(n)))


def test_a_balanced_set_of_50_pairs_draws_no_warning():
    assert warnings(pairs(50)) == []


@pytest.mark.parametrize(
    "positive,negative,message",
    [
        ("a long answer", "short", "positive completions are 2.60x as long as negative ones"),
        ("short", "a long answer", "negative completions are 2.60x as long as positive ones"),
    ],
)
def test_completions_of_unequal_length(positive, negative, message):
    (warning,) = warnings(pairs(50, positive, negative))
    assert message in warning and "beyond 1.5x" in warning and "--per-token" in warning


def test_just_within_the_length_ratio_is_fine():
    assert warnings(pairs(50, "abc", "ab")) == []  # 1.5x exactly


def test_too_few_pairs_for_the_test_split():
    (warning,) = warnings(pairs(40))
    assert warning.startswith("40 pairs leave 8 test pairs at the default test fraction 0.2")
    assert "(fewer than 10)" in warning and "give 50 pairs or more" in warning


def test_builtin_sets():
    assert [w[:9] for w in warnings(load_concept("formality"))] == ["positive "]  # formal: long
    for name in ("agreeableness", "risk_seeking", "sentiment"):
        assert warnings(load_concept(name)) == [], name
