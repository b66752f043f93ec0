"""Polarity pairs: a prompt with a concept-positive and a concept-negative completion."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
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

    def split(self, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> Splits:
        """Deterministic seeded three-way split; each part keeps the original order."""
        if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"split fractions must be >= 0 and sum below 1 (val {val_fraction}, "
                f"test {test_fraction})"
            )
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        n_test = round(len(self) * test_fraction)
        n_val = round(len(self) * val_fraction)
        test, val = sorted(order[:n_test]), sorted(order[n_test : n_test + n_val])
        train = sorted(order[n_test + n_val :])
        return Splits(
            self.subset(train, "train"), self.subset(val, "val"), self.subset(test, "test")
        )
