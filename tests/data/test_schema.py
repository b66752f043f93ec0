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


def test_split_of_distinct_prompts_is_the_one_recorded_before_grouping():
    # Recorded from the row-wise split (before prompts were grouped); the README's numbers rest
    # on it.
    parts = [[p.prompt for p in part] for part in make(10).split(0.2, 0.2, seed=0)]
    assert parts == [["q0", "q2", "q3", "q4", "q6", "q9"], ["q1", "q5"], ["q7", "q8"]]
    parts = [[p.prompt for p in part] for part in make(7).split(0.3, 0.15, seed=5)]
    assert parts == [["q0", "q2", "q4", "q5"], ["q1", "q3"], ["q6"]]


def repeated(counts: list[int]) -> PairSet:
    """Prompt `q{i}` with `counts[i]` outputs, the repeats interleaved as in a merged file."""
    rows = [(i, j) for j in range(max(counts)) for i, c in enumerate(counts) if j < c]
    return PairSet("r", tuple(PolarityPair(f"q{i}", f"a{i}.{j}", f"b{i}.{j}") for i, j in rows))


@pytest.mark.parametrize("seed", range(5))
def test_split_keeps_each_prompt_in_one_part(seed):
    pairs = repeated([1, 2, 3, 4] * 10)  # 100 pairs, 40 prompts
    splits = pairs.split(0.2, 0.2, seed=seed)
    prompts = [{p.prompt for p in part} for part in splits]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    key = lambda p: (p.prompt, p.positive)  # noqa: E731
    assert sorted((p for part in splits for p in part), key=key) == sorted(pairs, key=key)
    for part in splits:  # each part keeps the file's order
        assert [pairs.pairs.index(p) for p in part] == sorted(pairs.pairs.index(p) for p in part)
    # Test ends nearest 20, val nearest 40: within half the largest group (4) of each.
    assert abs(len(splits.test) - 20) <= 2
    assert abs(len(splits.test) + len(splits.val) - 40) <= 2
    assert splits == pairs.split(0.2, 0.2, seed=seed)


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


def test_instructed_puts_the_instruction_in_each_prompt():
    from steerfront.data import instructed

    pairs = PairSet("c", (PolarityPair("Q1", "a", "b", {"k": 1}), PolarityPair("Q2", "c", "d")))
    told = pairs.instructed("Be kind.")
    assert [p.prompt for p in told] == ["Q1\n\nBe kind.", "Q2\n\nBe kind."]
    assert [(p.positive, p.negative) for p in told] == [("a", "b"), ("c", "d")]
    assert told[0].meta == {"k": 1} and told.name == "c:instructed"
    assert [p.prompt for p in told] == [instructed(p.prompt, "Be kind.") for p in pairs]
    assert pairs.instructed("").fingerprint == pairs.fingerprint  # nothing asked: same prompts
