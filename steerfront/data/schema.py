"""Polarity pairs: a prompt with a concept-positive and a concept-negative completion."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import NamedTuple


@dataclass(frozen=True)
class PolarityPair:
    """One prompt `q` with completions `A_p` (shows the concept) and `A_n` (does not)."""

    prompt: str
    positive: str
    negative: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        return {
            "prompt": self.prompt,
            "positive": self.positive,
            "negative": self.negative,
            "meta": self.meta,
        }


def instructed(prompt: str, instruction: str) -> str:
    """`prompt` with `instruction` after it, as one user message: how the unsteered model is
    asked to express a concept (the local judge's probe examples, the prompted baseline). An
    empty instruction leaves the prompt as it is."""
    return f"{prompt}\n\n{instruction}" if instruction else prompt


class Splits(NamedTuple):
    """Train (to fit), validation (to select on) and test (to report) pairs."""

    train: PairSet
    val: PairSet
    test: PairSet


@dataclass(frozen=True)
class PairSet:
    """An ordered, named collection of polarity pairs."""

    name: str
    pairs: tuple[PolarityPair, ...]

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[PolarityPair]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> PolarityPair:
        return self.pairs[index]

    @property
    def fingerprint(self) -> str:
        """Hash of the pairs' content (not the name): same pairs, same cache entries."""
        digest = hashlib.sha256()
        for pair in self.pairs:
            digest.update(json.dumps([pair.prompt, pair.positive, pair.negative]).encode())
        return digest.hexdigest()[:16]

    @property
    def is_short_answer(self) -> bool:
        """Whether every completion is a short answer (where accuracy is defined)."""
        return all(len(p.positive.split()) <= 2 and len(p.negative.split()) <= 2 for p in self)

    def subset(self, indices: list[int], suffix: str) -> PairSet:
        return PairSet(f"{self.name}:{suffix}", tuple(self.pairs[i] for i in indices))

    def instructed(self, instruction: str) -> PairSet:
        """The same pairs with `instruction` in each prompt (`instructed`): what the prompted
        baseline is scored on, the completions unchanged."""
        pairs = tuple(
            PolarityPair(instructed(p.prompt, instruction), p.positive, p.negative, p.meta)
            for p in self.pairs
        )
        return PairSet(f"{self.name}:instructed", pairs)

    def split(self, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> Splits:
        """Deterministic seeded three-way split; each part keeps the original order.

        Pairs sharing a prompt stay in one part (else the test set would hold prompts seen in
        training): whole prompt groups, shuffled, fill test, then val, then train, each cut where
        the count comes nearest its target. With distinct prompts this is the row-wise split.
        """
        if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"split fractions must be >= 0 and sum below 1 (val {val_fraction}, "
                f"test {test_fraction})"
            )
        groups: dict[str, list[int]] = {}
        for i, pair in enumerate(self.pairs):
            groups.setdefault(pair.prompt, []).append(i)
        order = list(groups.values())
        random.Random(seed).shuffle(order)  # the same draws as shuffling rows when all distinct
        ends = list(accumulate((len(g) for g in order), initial=0))
        n_test = round(len(self) * test_fraction)
        n_val = round(len(self) * val_fraction)

        def cut(target: int, first: int) -> int:
            return min(range(first, len(ends)), key=lambda k: (abs(ends[k] - target), k))

        cut_test = cut(n_test, 0)
        cut_val = cut(n_test + n_val, cut_test)

        def part(chosen: list[list[int]], suffix: str) -> PairSet:
            return self.subset(sorted(i for g in chosen for i in g), suffix)

        return Splits(
            part(order[cut_val:], "train"),
            part(order[cut_test:cut_val], "val"),
            part(order[:cut_test], "test"),
        )
