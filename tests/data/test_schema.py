import pytest

from steerfront.data import PairSet, PolarityPair


def make(n: int) -> PairSet:
    return PairSet("t", tuple(PolarityPair(f"q{i}", f"a{i}", f"b{i}") for i in range(n)))


def test_split_is_deterministic_disjoint_and_complete():
    pairs = make(50)
    first, again = pairs.split(0.2, 0.2, seed=3), pairs.split(0.2, 0.2, seed=3)
    assert first == again
    assert (len(first.train), len(first.val), len(first.test)) == (30, 10, 10)
    prompts = [p.prompt for part in first for p in part]
    assert sorted(prompts) == sorted(p.prompt for p in pairs)
    assert pairs.split(0.2, 0.2, seed=4).test != first.test


def test_split_rejects_impossible_fractions():
    with pytest.raises(ValueError, match="sum below 1"):
        make(10).split(0.5, 0.5)


def test_fingerprint_depends_on_content_only():
    a, b = make(5), PairSet("other-name", make(5).pairs)
    assert a.fingerprint == b.fingerprint
    changed = PairSet("t", (*a.pairs[:4], PolarityPair("q4", "a4", "c4")))
    assert changed.fingerprint != a.fingerprint


def test_short_answer_shape():
    assert PairSet("s", (PolarityPair("q", " Yes", " No"),)).is_short_answer
    assert not PairSet("f", (PolarityPair("q", "A fine film indeed.", "Dull."),)).is_short_answer
