import re

from steerfront.data import builtin_names, load_concept


def test_at_least_three_concepts_of_both_shapes():
    names = builtin_names()
    assert len(names) >= 3
    shapes = {load_concept(name).is_short_answer for name in names}
    assert shapes == {True, False}


def test_each_set_is_large_balanced_and_free_of_duplicates():
    for name in builtin_names():
        pairs = load_concept(name)
        assert len(pairs) >= 120, name
        normalised = {re.sub(r"\W+", " ", p.prompt.lower()).strip() for p in pairs}
        assert len(normalised) == len(pairs), f"{name}: repeated prompts"
        if pairs.is_short_answer:
            yes = sum(p.positive.strip() == "Yes" for p in pairs) / len(pairs)
            assert 0.4 <= yes <= 0.6, f"{name}: positive is ' Yes' in {yes:.0%} of pairs"
