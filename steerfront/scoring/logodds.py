"""Preference and utility on one log-odds scale (PAPER.md §3).

From the completion NLLs `L_p = -log P(A_p|q)` and `L_n = -log P(A_n|q)`:
`pref_odds = L_n - L_p` and `util_odds = logit(P(u|q))` with `P(u|q) = e^-L_p + e^-L_n`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where tables are made: scoring runs without pyarrow (GPU boxes)
    import pyarrow as pa

# Confidence intervals: a percentile bootstrap over pairs, this many resamples, this level.
BOOTSTRAP = 1000
LEVEL = 0.95
# P(u|q) is clamped to at most 1 - CLAMP_EPS (only reachable with per-token-mean NLLs).
CLAMP_EPS = 1e-6
_LOG_MAX_P = float(np.log1p(-CLAMP_EPS))


def pref_odds(l_p: np.ndarray, l_n: np.ndarray) -> np.ndarray:
    """log P(p_p|q) / P(p_n|q) = L_n - L_p."""
    return np.asarray(l_n, dtype=np.float64) - np.asarray(l_p, dtype=np.float64)


def util_odds(l_p: np.ndarray, l_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable log-odds of a valid answer, and which pairs hit the clamp on P(u|q)."""
    log_p = np.logaddexp(-np.asarray(l_p, dtype=np.float64), -np.asarray(l_n, dtype=np.float64))
    clamped = log_p > _LOG_MAX_P
    log_p = np.minimum(log_p, _LOG_MAX_P)
    return log_p - np.log(-np.expm1(log_p)), clamped


@dataclass(frozen=True)
class LogOdds:
    """Per-row scores: one row per (pair, m). `pair` indexes the scored pair set."""

    pair: np.ndarray
    m: np.ndarray
    l_p: np.ndarray
    l_n: np.ndarray

    @property
    def pref(self) -> np.ndarray:
        return pref_odds(self.l_p, self.l_n)

    @property
    def util(self) -> np.ndarray:
        return util_odds(self.l_p, self.l_n)[0]

    @property
    def clamped(self) -> np.ndarray:
        return util_odds(self.l_p, self.l_n)[1]

    @property
    def correct(self) -> np.ndarray:
        """Per row: the model prefers the positive completion (`L_p < L_n`)."""
        return self.l_p < self.l_n

    def table(self) -> pa.Table:
        """Per-row results as an Arrow table."""
        import pyarrow as pa

        return pa.table(
            {
                "pair": self.pair,
                "m": self.m,
                "L_p": self.l_p,
                "L_n": self.l_n,
                "pref_odds": self.pref,
                "util_odds": self.util,
                "clamped": self.clamped,
                "correct": self.correct,
            }
        )

    def summary(self) -> pa.Table:
        """Per m: mean and standard error of both log-odds, accuracy and clamp count."""
        rows = []
        for m in np.unique(self.m):
            sel = self.m == m
            n = int(sel.sum())
            pref, util = self.pref[sel], self.util[sel]
            rows.append(
                {
                    "m": float(m),
                    "n": n,
                    "pref_odds": float(pref.mean()),
                    "pref_se": _stderr(pref),
                    "util_odds": float(util.mean()),
                    "util_se": _stderr(util),
                    "accuracy": float(self.correct[sel].mean()),
                    "clamped": int(self.clamped[sel].sum()),
                }
            )
        import pyarrow as pa

        return pa.Table.from_pylist(rows)


def _stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def bootstrap_interval(values: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The `LEVEL` percentile-bootstrap interval of each column's mean (rows are pairs).

    All columns are resampled with the same draws of pairs, and a given seed and pair count
    always draws the same, so intervals of points scored on the same pairs are comparable.
    """
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    draws = np.random.default_rng(seed).integers(0, len(values), size=(BOOTSTRAP, len(values)))
    means = values[draws].mean(axis=1)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
    return low, high
