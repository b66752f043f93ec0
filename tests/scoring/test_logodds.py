import numpy as np

from steerfront.scoring.logodds import BOOTSTRAP, LogOdds, bootstrap_interval, pref_odds, util_odds


def test_against_the_plain_formula():
    rng = np.random.default_rng(0)
    l_p, l_n = rng.uniform(1.0, 8, 100), rng.uniform(1.0, 8, 100)
    p_u = np.exp(-l_p) + np.exp(-l_n)
    np.testing.assert_allclose(pref_odds(l_p, l_n), l_n - l_p)
    util, clamped = util_odds(l_p, l_n)
    np.testing.assert_allclose(util, np.log(p_u / (1 - p_u)), rtol=1e-10)
    assert not clamped.any()


def test_stable_where_the_plain_formula_underflows():
    util, _ = util_odds(np.array([800.0]), np.array([801.0]))
    expected = np.logaddexp(-800.0, -801.0)  # log P(u); 1 - P(u) is 1
    assert np.isfinite(util).all()
    np.testing.assert_allclose(util, expected)


def test_clamp_fires_when_probabilities_sum_past_one():
    util, clamped = util_odds(np.array([0.1, 3.0]), np.array([0.2, 3.0]))
    assert clamped.tolist() == [True, False]
    np.testing.assert_allclose(util[0], np.log((1 - 1e-6) / 1e-6), rtol=1e-6)


def test_summary_per_m():
    scores = LogOdds(
        pair=np.array([0, 1, 0, 1]),
        m=np.array([0.0, 0.0, 1.0, 1.0]),
        l_p=np.array([1.0, 3.0, 1.0, 1.0]),
        l_n=np.array([2.0, 2.0, 4.0, 2.0]),
    )
    rows = scores.summary().to_pylist()
    assert [r["m"] for r in rows] == [0.0, 1.0]
    assert rows[0]["pref_odds"] == 0.0 and rows[1]["pref_odds"] == 2.0
    assert rows[0]["accuracy"] == 0.5 and rows[1]["accuracy"] == 1.0
    np.testing.assert_allclose(rows[1]["pref_se"], np.std([3.0, 1.0], ddof=1) / np.sqrt(2))
    assert scores.table().num_rows == 4


def test_bootstrap_interval_against_a_loop_over_the_same_draws():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(30, 3))
    low, high = bootstrap_interval(values, seed=7)
    draws = np.random.default_rng(7).integers(0, 30, size=(BOOTSTRAP, 30))
    means = np.array([[values[d, c].mean() for c in range(3)] for d in draws])
    np.testing.assert_allclose(low, np.quantile(means, 0.025, axis=0))
    np.testing.assert_allclose(high, np.quantile(means, 0.975, axis=0))
    again = bootstrap_interval(values, seed=7)
    np.testing.assert_array_equal(again[0], low)  # seeded: the same interval every time


def test_bootstrap_interval_is_about_the_normal_one_and_collapses_on_constants():
    values = np.random.default_rng(2).normal(3.0, 2.0, size=400)
    low, high = bootstrap_interval(values)
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert abs((high - low)[0] / (2 * 1.96 * se) - 1) < 0.1
    assert low[0] < values.mean() < high[0]
    low, high = bootstrap_interval(np.full(12, 0.5))
    assert low[0] == high[0] == 0.5
