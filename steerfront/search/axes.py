"""The front's two objectives and the kl constraint: which metrics a search's front is drawn
on (`--front-objectives`: two of pref_odds and util_odds, maximised, and kl, minimised) and
which points may stand on it (`--max-kl`: a point whose kl is above it is infeasible; it is
kept and shown, but never on the front)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from steerfront.defaults import SEARCH
from steerfront.errors import SteerfrontError

CHOICES = ("pref_odds", "util_odds", "kl")
MAXIMISED = {"pref_odds": True, "util_odds": True, "kl": False}
DEFAULT = tuple(SEARCH["front_objectives"])
MAX_KL = float(SEARCH["max_kl"])


def parse_objectives(value: str | Sequence[str]) -> tuple[str, str]:
    """Two different names of `CHOICES`, from a comma-separated text or a sequence."""
    names = [w.strip() for w in value.split(",")] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in CHOICES]
    if unknown:
        raise SteerfrontError(
            f"--front-objectives: unknown objective {unknown[0]!r} (choose two of "
            f"{', '.join(CHOICES)})"
        )
    if len(names) != 2 or names[0] == names[1]:
        raise SteerfrontError(
            f"--front-objectives: name two different objectives of {', '.join(CHOICES)}, "
            f"not {','.join(names)!r}"
        )
    return names[0], names[1]


def check_max_kl(value: float) -> float:
    """A kl budget in nats: above 0 (inf: none)."""
    if not value > 0:  # NaN too
        raise SteerfrontError(f"--max-kl must be above 0 nats, not {value:g}")
    return float(value)


def feasible(row: dict, max_kl: float) -> bool:
    """Whether a point keeps kl within `max_kl` (a point whose kl is unknown is)."""
    kl = row.get("kl")
    return kl is None or not kl > max_kl


def coordinates(rows: list[dict], objectives: Sequence[str]) -> np.ndarray:
    """`(N, 2)` values of the two objectives, both to maximise (kl negated); NaN where
    unknown."""
    out = np.full((len(rows), 2), np.nan)
    for i, row in enumerate(rows):
        for j, name in enumerate(objectives):
            value = row.get(name)
            if value is not None:
                out[i, j] = value if MAXIMISED[name] else -value
    return out


def reference(
    baseline: dict, util_floor: float, objectives: Sequence[str], max_kl: float
) -> tuple[float, float]:
    """The hypervolume's reference point in `coordinates`' terms, known before the first
    trial: the unsteered preference, `util_floor` below the unsteered utility, and for kl
    `max_kl` (or `SEARCH["kl_ceiling"]` without a constraint), negated."""

    def value(name: str) -> float:
        if name == "pref_odds":
            return baseline["val_pref_odds"]
        if name == "util_odds":
            return baseline["val_util_odds"] - util_floor
        return -(max_kl if math.isfinite(max_kl) else SEARCH["kl_ceiling"])

    return value(objectives[0]), value(objectives[1])
