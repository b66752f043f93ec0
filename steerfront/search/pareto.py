"""Pareto front of search trials over (pref_odds, util_odds), both maximised.

A steering search yields many trials that trade preference against utility; no single score
ranks them. These helpers keep the trials worth looking at (the non-dominated ones), measure how
good a whole front is (hypervolume, to compare searches) and suggest one balanced trial (the knee).
All inputs are `(N, 2)` float arrays; rows containing NaN (failed trials) are ignored.
"""

from __future__ import annotations

import numpy as np


def _as_points(points: np.ndarray) -> np.ndarray:
    """Validate early: a wrong shape would otherwise surface as a confusing broadcast error."""
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {arr.shape}")
    return arr


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows (both objectives maximised).

    A row is dominated if another is >= in both objectives and > in at least one, so exact
    duplicates of a front point are all kept. NaN rows are never on the front and never dominate.
    Sorting by the first objective descending makes this O(N log N): a row survives iff it has
    the highest second objective among rows with the same first objective, and that value beats
    every row with a strictly larger first objective.
    """
    pts = _as_points(points)
    mask = np.zeros(len(pts), dtype=bool)
    valid = np.flatnonzero(~np.isnan(pts).any(axis=1))
    if len(valid) == 0:
        return mask
    x, y = pts[valid, 0], pts[valid, 1]
    order = np.lexsort((-y, -x))  # x descending, ties by y descending
    xs, ys = x[order], y[order]

    # Runs of equal x; the first row of each run holds that run's highest y.
    new_run = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(new_run)
    run = np.cumsum(new_run) - 1
    best_y_so_far = np.maximum.accumulate(ys)
    # Per run: some row with a strictly larger x has a y at least the run's highest.
    beaten = np.r_[False, ys[starts[1:]] <= best_y_so_far[starts[1:] - 1]]

    on_front = (ys == ys[starts[run]]) & ~beaten[run]
    mask[valid[order[on_front]]] = True
    return mask


def front_order(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Indices of the front rows by first objective ascending, so the front draws as a line."""
    pts = _as_points(points)
    idx = np.flatnonzero(mask)
    return idx[np.lexsort((pts[idx, 1], pts[idx, 0]))]


def hypervolume(points: np.ndarray, reference: tuple[float, float]) -> float:
    """Area dominated by the points and bounded below by `reference`: one number per front.

    The union of the rectangles [ref_x, x] x [ref_y, y] over the rows strictly better than the
    reference in both objectives; it only grows as better trials are added, so it compares
    searches. Exact: on the front sorted by x ascending (hence y descending), the strip
    (x_{i-1}, x_i] is covered up to y_i.
    """
    pts = _as_points(points)
    ref_x, ref_y = (float(v) for v in reference)
    if not (np.isfinite(ref_x) and np.isfinite(ref_y)):
        raise ValueError(f"reference must be finite, got {reference}")
    pts = pts[~np.isnan(pts).any(axis=1)]
    pts = pts[(pts[:, 0] > ref_x) & (pts[:, 1] > ref_y)]
    front = pts[front_order(pts, pareto_mask(pts))]
    widths = np.diff(np.r_[ref_x, front[:, 0]])
    return float(np.sum(widths * (front[:, 1] - ref_y)))


def knee(points: np.ndarray, mask: np.ndarray) -> int | None:
    """Index of the front's knee: the most balanced trade-off, or None for an empty front.

    Both objectives are scaled to [0, 1] over the front, which puts its two extreme points at
    (0, 1) and (1, 0); the knee is the front point furthest beyond the line joining them, on the
    side of the ideal point (1, 1). That distance is (x + y - 1) / sqrt(2), so this is the point
    with the highest normalised sum, which also decides the 1- and 2-point cases. Ties (always
    the case for two distinct points, which normalise to (0, 1) and (1, 0)) go to the higher raw
    sum (both objectives are log-odds on one scale), then to the lowest index.
    """
    pts = _as_points(points)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return None
    front = pts[idx]
    low = front.min(axis=0)
    span = front.max(axis=0) - low
    scaled = (front - low) / np.where(span > 0, span, 1.0)  # a zero span scales to 0
    # lexsort: last key is primary; -idx makes the lowest index win the final tie.
    best = np.lexsort((-idx, front.sum(axis=1), scaled.sum(axis=1)))[-1]
    return int(idx[best])
