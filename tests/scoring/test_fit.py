import numpy as np
import pytest

from steerfront.errors import SteerfrontError
from steerfront.scoring.fit import (
    DECAY_NAMES,
    FREE_PARAMETERS,
    decay,
    fit_curve,
    fit_report,
    grid_problem,
)

# Symmetric grid from -10 to 10, denser near 0.
_T = np.linspace(-1, 1, 41)
M = 10 * np.sign(_T) * np.abs(_T) ** 1.5


def _continuous(params: dict[str, float]) -> dict[str, float]:
    """Solve p_neg from the continuity condition at m = 0."""
    pos = params["p_pos"] * np.log1p(params["m_pos"] ** 2 / params["L_pos"])
    return {**params, "p_neg": float(pos / np.log1p(params["m_neg"] ** 2 / params["L_neg"]))}


TRUE = {
    "pref": _continuous(
        {"alpha": 1.2, "beta": 0.5, "b": -0.4, "m_pos": 0.6, "L_pos": 3.0, "p_pos": 1.0}
        | {"m_neg": -0.4, "L_neg": 5.0}
    ),
    "util": _continuous(
        {"beta": 4.0, "b": -2.0, "m_pos": 0.5, "L_pos": 4.0, "p_pos": 1.2}
        | {"m_neg": -0.3, "L_neg": 6.0}
    ),
    # A saturating preference curve (p < 1) and a utility dip rather than a peak.
    "pref_saturating": _continuous(
        {"alpha": 2.0, "beta": 0.0, "b": 0.3, "m_pos": 1.0, "L_pos": 2.0, "p_pos": 0.6}
        | {"m_neg": -0.5, "L_neg": 1.0}
    ),
    "util_dip": _continuous(
        {"beta": -3.0, "b": 1.0, "m_pos": 0.2, "L_pos": 10.0, "p_pos": 2.0}
        | {"m_neg": -0.1, "L_neg": 20.0}
    ),
}


def _clean(params: dict[str, float], m: np.ndarray = M) -> np.ndarray:
    d = decay(m, *(params[name] for name in DECAY_NAMES))
    return (params.get("alpha", 0.0) * m + params["beta"]) * d + params["b"]


def _noisy(params: dict[str, float], seed: int, rel_noise: float = 0.01) -> np.ndarray:
    clean = _clean(params)
    return clean + np.random.default_rng(seed).normal(0, rel_noise * np.ptp(clean), M.size)


def test_decay_uses_one_branch_per_sign():
    m = np.array([-4.0, -0.5, 0.0, 2.0])
    d = decay(m, m_pos=1.0, L_pos=2.0, p_pos=0.5, m_neg=-1.0, L_neg=3.0, p_neg=2.0)
    expected = [
        (1 + 9 / 3) ** -2.0,
        (1 + 0.25 / 3) ** -2.0,
        (1 + 1 / 2) ** -0.5,
        (1 + 1 / 2) ** -0.5,
    ]
    np.testing.assert_allclose(d, expected, rtol=1e-12)


def test_true_parameters_are_continuous():
    for params in TRUE.values():
        d = decay(np.array([-1e-12, 0.0]), *(params[name] for name in DECAY_NAMES))
        assert d[0] == pytest.approx(d[1], abs=1e-9)


@pytest.mark.parametrize("case", sorted(TRUE))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_synthetic_curve(case, seed):
    kind = case.split("_")[0]
    true = TRUE[case]
    clean = _clean(true)
    fit = fit_curve(M, _noisy(true, seed), kind)

    assert fit.kind == kind
    expected_names = {"beta", "b", *DECAY_NAMES} | ({"alpha"} if kind == "pref" else set())
    assert set(fit.params) == expected_names
    assert fit.r2 > 0.99
    assert np.abs(fit.predict(M) - clean).max() < 0.05 * np.ptp(clean)
    # Between grid points as well, not only where the data were.
    dense = np.linspace(-10, 10, 401)
    assert np.abs(fit.predict(dense) - _clean(true, dense)).max() < 0.05 * np.ptp(clean)

    scale = np.ptp(clean)
    assert fit.params["b"] == pytest.approx(true["b"], abs=0.05 * scale)
    if kind == "pref":
        assert np.sign(fit.params["alpha"]) == np.sign(true["alpha"])
        assert fit.params["alpha"] == pytest.approx(true["alpha"], rel=0.15)
    assert fit.params["beta"] == pytest.approx(true["beta"], abs=0.05 * scale)
    assert all(fit.params[name] > 0 for name in ("L_pos", "p_pos", "L_neg", "p_neg"))


def test_r2_reported_is_r2_on_the_fitted_data():
    y = _noisy(TRUE["util"], 0)
    fit = fit_curve(M, y, "util")
    expected = 1 - ((y - fit.predict(M)) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert fit.r2 == pytest.approx(expected, rel=1e-12)
    assert fit.r2_on(M, y) == pytest.approx(fit.r2, rel=1e-12)


@pytest.mark.parametrize("case", sorted(TRUE))
def test_fitted_decay_is_continuous_at_zero(case):
    fit = fit_curve(M, _noisy(TRUE[case], 3, rel_noise=0.05), case.split("_")[0])
    d = decay(np.array([-1e-12, 0.0]), *(fit.params[name] for name in DECAY_NAMES))
    assert abs(d[0] - d[1]) < 1e-5


def test_same_fit_for_same_seed():
    y = _noisy(TRUE["pref"], 4)
    assert fit_curve(M, y, "pref", seed=7).params == fit_curve(M, y, "pref", seed=7).params


def test_parameters_are_in_original_units():
    """Rescaling m and y must rescale the parameters the way the model says."""
    y = _noisy(TRUE["pref"], 5)
    base = fit_curve(M, y, "pref").params
    scaled = fit_curve(3 * M, 2 * y + 1, "pref").params
    assert scaled["m_pos"] == pytest.approx(3 * base["m_pos"], rel=1e-3, abs=1e-3)
    assert scaled["L_pos"] == pytest.approx(9 * base["L_pos"], rel=1e-3)
    assert scaled["p_pos"] == pytest.approx(base["p_pos"], rel=1e-3)
    assert scaled["alpha"] == pytest.approx(2 / 3 * base["alpha"], rel=1e-3)
    assert scaled["beta"] == pytest.approx(2 * base["beta"], rel=1e-3, abs=1e-3)
    assert scaled["b"] == pytest.approx(2 * base["b"] + 1, rel=1e-3)


def test_repeated_m_values_are_fitted_together():
    """Several pairs per strength: the fit sees every point."""
    true = TRUE["util"]
    m = np.repeat(M, 3)
    clean = _clean(true, m)
    y = clean + np.random.default_rng(6).normal(0, 0.01 * np.ptp(clean), m.size)
    fit = fit_curve(m, y, "util")
    assert fit.r2 > 0.99
    assert np.abs(fit.predict(M) - _clean(true)).max() < 0.05 * np.ptp(clean)


def test_report_on_related_curves_transfers():
    true = TRUE["util"]
    report = fit_report(M, _noisy(true, 0), M, _noisy(true, 1), "util").numbers()
    assert set(report) == {"params", "r2_train", "r2_test", "r2_transfer"}
    assert set(report["params"]) == {"beta", "b", *DECAY_NAMES}
    assert report["r2_train"] > 0.99
    assert report["r2_test"] > 0.99
    assert report["r2_transfer"] > 0.98


@pytest.mark.parametrize("kind", ["pref", "util"])
def test_transfer_to_an_unrelated_curve_is_negative(kind):
    y = _noisy(TRUE[kind], 0)
    report = fit_report(M, y, M, -y, kind).numbers()
    assert report["r2_train"] > 0.99
    assert report["r2_test"] > 0.99  # the negated curve is still in the model family
    assert report["r2_transfer"] < 0


def test_transfer_can_use_a_different_grid():
    true = TRUE["pref"]
    fit = fit_curve(M, _noisy(true, 0), "pref")
    m_test = np.linspace(-8, 8, 17)
    assert fit.r2_on(m_test, _clean(true, m_test)) > 0.98


def _one_line_error(match: str, call) -> None:
    with pytest.raises(SteerfrontError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_free_parameters_count_the_continuity_constraint():
    """Linear coefficients plus six decay parameters, less one tied by continuity at m = 0."""
    assert FREE_PARAMETERS == {"pref": 8, "util": 7}


@pytest.mark.parametrize("kind,needed", [("pref", 16), ("util", 14)])
def test_needs_twice_as_many_distinct_m_as_free_parameters(kind, needed):
    enough = np.linspace(-10, 10, needed)
    assert grid_problem(enough, kind) is None
    assert fit_curve(enough, _clean(TRUE[kind], enough), kind).r2 > 0.99
    few = np.linspace(-10, 10, needed - 1)
    _one_line_error(
        f"^fit: {needed - 1} distinct m, but the {kind} fit has {needed // 2} free parameters "
        f"and needs at least {needed} distinct m$",
        lambda: fit_curve(few, _clean(TRUE[kind], few), kind),
    )


def test_repeated_points_do_not_count_as_distinct():
    m = np.repeat(np.linspace(-10, 10, 13), 4)
    y = np.arange(m.size, dtype=float)
    _one_line_error("13 distinct m, .* at least 14 distinct m", lambda: fit_curve(m, y, "util"))


def test_only_positive_m():
    m = np.linspace(0, 10, 20)
    _one_line_error(
        "both signs.*none with m < 0$", lambda: fit_curve(m, _clean(TRUE["util"], m), "util")
    )


def test_only_negative_m():
    m = np.linspace(-10, 0, 20)[:-1]
    _one_line_error(
        "both signs.*none with m > 0$", lambda: fit_curve(m, _clean(TRUE["util"], m), "util")
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(bad):
    y = _noisy(TRUE["pref"], 0)
    y[3] = bad
    _one_line_error("finite", lambda: fit_curve(M, y, "pref"))
    m = M.copy()
    m[5] = bad
    _one_line_error("finite", lambda: fit_curve(m, _noisy(TRUE["pref"], 0), "pref"))


def test_mismatched_lengths():
    _one_line_error("equal length", lambda: fit_curve(M, _noisy(TRUE["pref"], 0)[:-1], "pref"))


def test_constant_y():
    _one_line_error("constant", lambda: fit_curve(M, np.ones_like(M), "util"))


def test_transfer_to_a_flat_curve_is_refused():
    fit = fit_curve(M, _noisy(TRUE["util"], 0), "util")
    _one_line_error("constant", lambda: fit.r2_on(M, np.zeros_like(M)))


def test_unknown_kind():
    _one_line_error("kind", lambda: fit_curve(M, _noisy(TRUE["util"], 0), "utility"))


def test_report_names_the_bad_split():
    y = _noisy(TRUE["util"], 0)
    y_bad = y.copy()
    y_bad[0] = np.nan
    _one_line_error("^test curve: .*finite", lambda: fit_report(M, y, M, y_bad, "util"))
    _one_line_error("^train curve: .*finite", lambda: fit_report(M, y_bad, M, y, "util"))
