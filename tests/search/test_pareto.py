"""Pareto front helpers: checked against brute force, hand-computed areas and rasterisation."""

from __future__ import annotations

import numpy as np
import pytest

from steerfront.search.pareto import front_order, hypervolume, knee, pareto_mask


def brute_force_mask(points: np.ndarray) -> np.ndarray:
    """O(N^2) definition: dominated if another row is >= in both and > in one; NaN rows out."""
    valid = ~np.isnan(points).any(axis=1)
    mask = np.zeros(len(points), dtype=bool)
    for i in np.flatnonzero(valid):
        others = points[valid]
        dominated = np.any(np.all(others >= points[i], axis=1) & np.any(others > points[i], axis=1))
        mask[i] = not dominated
    return mask


def raster_hypervolume(points: np.ndarray, reference: tuple[float, float], n: int) -> float:
    """Area estimate: fraction of n x n cell centres dominated by some point."""
    pts = points[~np.isnan(points).any(axis=1)]
    hi = pts.max(axis=0)
    gx = reference[0] + (np.arange(n) + 0.5) * (hi[0] - reference[0]) / n
    gy = reference[1] + (np.arange(n) + 0.5) * (hi[1] - reference[1]) / n
    cx, cy = np.meshgrid(gx, gy, indexing="ij")
    covered = np.zeros(cx.shape, dtype=bool)
    for x, y in pts:
        covered |= (cx <= x) & (cy <= y)
    return covered.mean() * (hi[0] - reference[0]) * (hi[1] - reference[1])


# --- pareto_mask -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_pareto_mask_matches_brute_force_continuous(seed):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(int(rng.integers(1, 200)), 2))
    points[:, 1] -= 0.5 * points[:, 0]  # correlated objectives give a longer front
    np.testing.assert_array_equal(pareto_mask(points), brute_force_mask(points))


@pytest.mark.parametrize("seed", range(6))
def test_pareto_mask_matches_brute_force_with_ties_duplicates_and_nan(seed):
    rng = np.random.default_rng(100 + seed)
    points = rng.integers(0, 6, size=(60, 2)).astype(float)
    points[rng.random(60) < 0.1, int(rng.integers(2))] = np.nan
    expected = brute_force_mask(points)
    assert expected.sum() >= 1
    np.testing.assert_array_equal(pareto_mask(points), expected)


def test_pareto_mask_hand_made():
    points = np.array([[1.0, 3.0], [2.0, 2.0], [1.5, 1.5], [3.0, 1.0], [2.0, 1.0]])
    # (1.5, 1.5) is dominated by (2, 2); (2, 1) by (2, 2) (tie in x) and by (3, 1) (tie in y).
    assert pareto_mask(points).tolist() == [True, True, False, True, False]


def test_pareto_mask_keeps_all_duplicates_of_front_points():
    points = np.array([[2.0, 2.0], [2.0, 2.0], [1.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    assert pareto_mask(points).tolist() == [True, True, False, False, True]


def test_pareto_mask_empty_and_single():
    assert pareto_mask(np.empty((0, 2))).shape == (0,)
    assert pareto_mask(np.array([[-5.0, 7.0]])).tolist() == [True]


def test_pareto_mask_nan_rows_never_on_front_and_never_dominate():
    points = np.array([[np.nan, 10.0], [0.0, 0.0], [10.0, np.nan], [np.nan, np.nan]])
    assert pareto_mask(points).tolist() == [False, True, False, False]
    assert not pareto_mask(np.full((3, 2), np.nan)).any()


def test_pareto_mask_infinite_values():
    points = np.array([[5.0, -np.inf], [np.inf, -np.inf], [0.0, 1.0]])
    assert pareto_mask(points).tolist() == [False, True, True]


def test_pareto_mask_rejects_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        pareto_mask(np.zeros((4, 3)))


# --- front_order -------------------------------------------------------------------------------


def test_front_order_sorts_front_by_first_objective():
    points = np.array([[3.0, 1.0], [0.0, 0.0], [1.0, 3.0], [2.0, 2.0]])
    order = front_order(points, pareto_mask(points))
    assert order.tolist() == [2, 3, 0]
    assert front_order(np.empty((0, 2)), np.zeros(0, dtype=bool)).tolist() == []


# --- hypervolume -------------------------------------------------------------------------------


def test_hypervolume_single_point_is_rectangle():
    assert hypervolume(np.array([[3.0, 2.0]]), (1.0, -1.0)) == pytest.approx(2.0 * 3.0)


def test_hypervolume_two_steps():
    # Union of [0,1]x[0,3] and [0,3]x[0,1]: 3 + 3 - 1 overlap.
    points = np.array([[1.0, 3.0], [3.0, 1.0]])
    assert hypervolume(points, (0.0, 0.0)) == pytest.approx(5.0)


def test_hypervolume_dominated_and_duplicate_points_add_nothing():
    base = np.array([[1.0, 3.0], [3.0, 1.0]])
    extra = np.vstack([base, [[0.5, 0.5], [1.0, 1.0], [3.0, 1.0], [np.nan, 9.0]]])
    assert hypervolume(extra, (0.0, 0.0)) == pytest.approx(hypervolume(base, (0.0, 0.0)))


def test_hypervolume_points_not_beyond_reference_contribute_zero():
    ref = (1.0, 1.0)
    assert hypervolume(np.array([[1.0, 5.0], [5.0, 1.0], [0.0, 0.0]]), ref) == 0.0
    assert hypervolume(np.empty((0, 2)), ref) == 0.0
    assert hypervolume(np.array([[5.0, 1.0], [2.0, 3.0]]), ref) == pytest.approx(2.0)


def test_hypervolume_rejects_non_finite_reference():
    with pytest.raises(ValueError, match="reference"):
        hypervolume(np.ones((1, 2)), (np.nan, 0.0))


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_matches_rasterisation(seed):
    rng = np.random.default_rng(200 + seed)
    angles = rng.uniform(0, np.pi / 2, size=30)
    radii = rng.uniform(0.5, 1.0, size=30)
    points = np.c_[radii * np.cos(angles), radii * np.sin(angles)]
    exact = hypervolume(points, (0.0, 0.0))
    assert exact == pytest.approx(raster_hypervolume(points, (0.0, 0.0), n=400), rel=0.01)


def test_hypervolume_is_order_invariant():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(50, 2))
    ref = (-3.0, -3.0)
    assert hypervolume(points[rng.permutation(50)], ref) == pytest.approx(hypervolume(points, ref))


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_is_monotone_when_adding_points(seed):
    rng = np.random.default_rng(300 + seed)
    points = rng.normal(size=(80, 2))
    ref = (-1.0, -1.0)
    volumes = [hypervolume(points[:k], ref) for k in range(len(points) + 1)]
    assert volumes[0] == 0.0
    assert np.all(np.diff(volumes) >= -1e-12)
    assert volumes[-1] > 0


# --- knee --------------------------------------------------------------------------------------


def test_knee_on_quarter_circle_picks_middle():
    angles = np.linspace(0, np.pi / 2, 9)
    points = np.c_[np.cos(angles), np.sin(angles)]
    points = np.vstack([points, [[0.1, 0.1], [0.5, 0.2]]])  # dominated, never the knee
    shuffled = np.random.default_rng(0).permutation(len(points))
    points = points[shuffled]
    k = knee(points, pareto_mask(points))
    np.testing.assert_allclose(points[k], [np.cos(np.pi / 4), np.sin(np.pi / 4)])


def test_knee_is_scale_invariant():
    angles = np.linspace(0, np.pi / 2, 7)
    points = np.c_[100.0 * np.cos(angles) - 50.0, 0.01 * np.sin(angles)]
    assert knee(points, pareto_mask(points)) == 3


def test_knee_edge_cases():
    assert knee(np.empty((0, 2)), np.zeros(0, dtype=bool)) is None
    points = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert knee(points, np.array([False, False])) is None
    assert knee(points, pareto_mask(points)) == 0
    # Two front points both normalise to a sum of 1: the higher raw sum wins.
    two = np.array([[0.0, 5.0], [-1.0, -1.0], [4.0, 2.0]])
    assert knee(two, pareto_mask(two)) == 2
    # Full tie (same raw sum too): the lowest index.
    tie = np.array([[0.0, 4.0], [4.0, 0.0]])
    assert knee(tie, pareto_mask(tie)) == 0
    dup = np.array([[2.0, 2.0], [2.0, 2.0]])
    assert knee(dup, pareto_mask(dup)) == 0
