"""Warnings about a concept set that loads fine but would mislead the scores."""

from __future__ import annotations

import math
import statistics

from steerfront.data.schema import PairSet
from steerfront.defaults import TEST_FRACTION

# A completion's NLL is summed over its tokens, so it grows with its length: when one side of
# the pairs is typically half as long again as the other, the length, not the concept, drives
# pref_odds.
LENGTH_RATIO = 1.5
# Under this many test pairs a test mean's standard error is a third of the pairs' spread or
# more: a pick judged on them is mostly noise.
MIN_TEST_PAIRS = 10


def warnings(pairs: PairSet) -> list[str]:
    """One line per problem: completions of unequal length, too few pairs for the test split."""
    found = []
    ratio = statistics.median(len(p.positive) / len(p.negative) for p in pairs)
    if not 1 / LENGTH_RATIO <= ratio <= LENGTH_RATIO:
        longer, shorter = ("positive", "negative") if ratio > 1 else ("negative", "positive")
        found.append(
            f"{longer} completions are {max(ratio, 1 / ratio):.2f}x as long as {shorter} ones "
            f"(median over pairs, in characters; beyond {LENGTH_RATIO}x): summed NLLs favour "
            f"the shorter, so pref_odds leans to the {shorter} side; --per-token scores the "
            "mean NLL per token"
        )
    test = len(pairs.split(0.0, TEST_FRACTION).test)
    if test < MIN_TEST_PAIRS:
        found.append(
            f"{len(pairs)} pairs leave {test} test pairs at the default test fraction "
            f"{TEST_FRACTION} (fewer than {MIN_TEST_PAIRS}): test scores that few are mostly "
            f"noise; give {math.ceil(MIN_TEST_PAIRS / TEST_FRACTION)} pairs or more"
        )
    return found
