import math

import numpy as np
import pytest
import torch

from steerfront.errors import SteerfrontError
from steerfront.scoring.manifold import MIN_POINTS, Manifold, correlation, measure

D = 16


def _subspace_data(n: int = 200, seed: int = 0):
    """Points on a random 3-d linear subspace of R^16 (variances 9, 6.25, 4) plus tiny noise."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    inside, outside = q[:, :3], q[:, 3:]
    coords = rng.normal(size=(n, 3)) * np.array([3.0, 2.5, 2.0])
    offset = rng.normal(size=D) * 5
    points = offset + coords @ inside.T + 1e-6 * rng.normal(size=(n, D))
    return torch.from_numpy(points), inside, outside


def _brute_knn(x: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    out = np.empty(len(x))
    for i, row in enumerate(x):
        distances = np.sqrt(((points - row) ** 2).sum(axis=1))
        out[i] = np.sort(distances)[:k].mean()
    return out


def test_finds_the_subspace():
    points, inside, _ = _subspace_data()
    manifold = Manifold.fit(points, variance=0.9)
    assert manifold.k == 3
    assert manifold.explained == pytest.approx(1.0, abs=1e-9)
    basis = manifold.basis.numpy()
    # Same subspace: the fitted basis projects the true one onto itself.
    np.testing.assert_allclose(basis @ basis.T @ inside, inside, atol=1e-6)
    assert manifold.off_manifold(points).max() < 1e-4


def test_a_fit_from_too_few_points_is_unreliable():
    points, _, _ = _subspace_data()
    assert Manifold.fit(points).reliable  # 200 points, k = 3
    few = Manifold.fit(torch.randn(3, D, generator=torch.Generator().manual_seed(0)))
    assert few.explained == pytest.approx(1.0) and few.k <= 2  # any 3 points "explain" 100%
    assert not few.reliable
    spread = torch.randn(12, D, generator=torch.Generator().manual_seed(0))
    wide = Manifold.fit(spread)  # 12 points, but 90% of their variance takes more than 6 axes
    assert 12 >= MIN_POINTS and wide.k > 6 and not wide.reliable


def test_k_is_the_smallest_reaching_the_variance():
    points, _, _ = _subspace_data()
    centred = points.numpy() - points.numpy().mean(axis=0)
    power = np.linalg.svd(centred, compute_uv=False) ** 2
    cumulative = np.cumsum(power) / power.sum()
    assert cumulative[0] < 0.9 < cumulative[2]
    for i in range(3):
        for target, k in [(cumulative[i] - 1e-3, i + 1), (cumulative[i] + 1e-3, i + 2)]:
            if target > 1.0:
                continue
            manifold = Manifold.fit(points, variance=target)
            assert manifold.k == k
            assert manifold.explained == pytest.approx(cumulative[k - 1])
    assert Manifold.fit(points, variance=1.0).k >= 3


@pytest.mark.parametrize("c", [0.5, -2.0, 7.0])
def test_shift_off_the_subspace_is_measured_exactly(c):
    points, _, outside = _subspace_data()
    manifold = Manifold.fit(points)
    u = torch.from_numpy(outside[:, 4])
    off = manifold.off_manifold(points + c * u)
    np.testing.assert_allclose(off.numpy(), abs(c), atol=1e-4)


def test_shift_inside_the_subspace_stays_on_it_but_moves_away_from_the_data():
    points, inside, _ = _subspace_data()
    manifold = Manifold.fit(points)
    v = torch.from_numpy(inside[:, 0])
    before = manifold.knn_distance(points)
    shifted = points + 20.0 * v
    assert manifold.off_manifold(shifted).max() < 1e-4
    after = manifold.knn_distance(shifted)
    assert after.mean() > before.mean() + 5.0


def test_knn_distance_matches_brute_force():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(40, 7))
    queries = rng.normal(size=(3, 5, 7)) * 2
    manifold = Manifold.fit(torch.from_numpy(points), neighbours=4)
    got = manifold.knn_distance(torch.from_numpy(queries))
    assert got.shape == (3, 5)
    expected = _brute_knn(queries.reshape(-1, 7), points, 4).reshape(3, 5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # On the unsteered points the self-distance 0 counts among the nearest.
    own = manifold.knn_distance(torch.from_numpy(points))
    np.testing.assert_allclose(own.numpy(), _brute_knn(points, points, 4), rtol=1e-10, atol=1e-12)


def test_neighbours_are_clamped():
    points = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    assert Manifold.fit(points, neighbours=10).neighbours == 3
    assert Manifold.fit(points, neighbours=0).neighbours == 1
    np.testing.assert_allclose(
        Manifold.fit(points, neighbours=10).knn_distance(points).numpy(),
        _brute_knn(points.numpy(), points.numpy(), 3),
        atol=1e-12,
    )


def test_measure_projection_and_off_manifold():
    points, inside, outside = _subspace_data(n=50)
    manifold = Manifold.fit(points)
    ms = [-4.0, -1.0, 0.0, 2.0, 5.0]
    v = torch.from_numpy(outside[:, 0] * 3.0)  # not unit: measure normalises the direction
    steered = torch.stack([points + m * v for m in ms])
    rows = measure(manifold, steered, v, ms)
    assert [row["m"] for row in rows] == ms
    unit = outside[:, 0]
    base = float(((points.numpy() - points.numpy().mean(axis=0)) @ unit).mean())
    for row, m in zip(rows, ms, strict=True):
        assert row["projection"] == pytest.approx(base + 3.0 * m, abs=1e-9)
        assert row["off_manifold"] == pytest.approx(3.0 * abs(m), abs=1e-4)
        assert row["off_manifold_se"] < 1e-4
    by_abs = sorted(rows, key=lambda row: abs(row["m"]))
    offs = [row["off_manifold"] for row in by_abs]
    assert offs == sorted(offs)


def test_measure_means_and_standard_errors():
    rng = np.random.default_rng(3)
    points = torch.from_numpy(rng.normal(size=(30, 6)))
    manifold = Manifold.fit(points, variance=0.6, neighbours=3)
    steered = torch.from_numpy(rng.normal(size=(2, 30, 6)))
    direction = torch.from_numpy(rng.normal(size=6))
    rows = measure(manifold, steered, direction, [1.0, 2.0])
    unit = direction.numpy() / np.linalg.norm(direction.numpy())
    mean = points.numpy().mean(axis=0)
    _, _, vh = np.linalg.svd(points.numpy() - mean, full_matrices=False)
    basis = vh[: manifold.k].T
    for i, row in enumerate(rows):
        centred = steered[i].numpy() - mean
        off = np.linalg.norm(centred - centred @ basis @ basis.T, axis=1)
        knn = _brute_knn(steered[i].numpy(), points.numpy(), 3)
        assert row["projection"] == pytest.approx((centred @ unit).mean())
        assert row["off_manifold"] == pytest.approx(off.mean())
        assert row["off_manifold_se"] == pytest.approx(off.std(ddof=1) / math.sqrt(30))
        assert row["knn_distance"] == pytest.approx(knn.mean())
        assert row["knn_distance_se"] == pytest.approx(knn.std(ddof=1) / math.sqrt(30))


def test_correlation():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=9), rng.normal(size=9)
    assert correlation(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert correlation(list(a), list(2 * a + 1)) == pytest.approx(1.0)
    assert math.isnan(correlation([1.0, 1.0, 1.0], [0.1, 0.5, 0.2]))
    assert math.isnan(correlation([0.1, 0.5, 0.2], [3.0, 3.0, 3.0]))


@pytest.mark.parametrize("variance", [0.0, -0.1, 1.5])
def test_rejects_bad_variance(variance):
    with pytest.raises(SteerfrontError, match="variance") as caught:
        Manifold.fit(torch.randn(10, 4), variance=variance)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("shape", [(1, 4), (0, 4), (5,)])
def test_rejects_too_few_points(shape):
    with pytest.raises(SteerfrontError, match="at least 2") as caught:
        Manifold.fit(torch.randn(*shape))
    assert "\n" not in str(caught.value)


def test_rejects_mismatched_inputs():
    manifold = Manifold.fit(torch.randn(10, 4))
    with pytest.raises(SteerfrontError):
        measure(manifold, torch.randn(2, 10, 4), torch.randn(4), [1.0])
    with pytest.raises(SteerfrontError):
        measure(manifold, torch.randn(1, 10, 4), torch.zeros(4), [1.0])
    with pytest.raises(SteerfrontError):
        manifold.off_manifold(torch.randn(3, 5))
    with pytest.raises(SteerfrontError):
        correlation([1.0, 2.0], [1.0, 2.0, 3.0])
