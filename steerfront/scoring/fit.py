"""Decay-curve fits of PrefOdds and UtilOdds against the steering strength m (PAPER.md §5).

Both curves share the shape of a piecewise rational-quadratic validity decay, one branch per
sign of m, with the branches equal at m = 0:

    D(m) = [1 + (m - m_pos)^2 / L_pos]^(-p_pos)    for m >= 0
    D(m) = [1 + (m - m_neg)^2 / L_neg]^(-p_neg)    for m <  0
    PrefOdds(m) ≈ (alpha·m + beta)·D(m) + b
    UtilOdds(m) ≈ beta·D(m) + b

The fit is least squares under the continuity constraint (SLSQP, several restarts). For each
trial decay shape the linear coefficients (alpha, beta, b) are solved exactly (variable
projection), so SLSQP only searches the six decay parameters: fewer local minima, and the starts
need no guess for the coefficients.

Free parameters: the linear coefficients plus the six decay parameters, less one for the
continuity constraint: 8 for PrefOdds, 7 for UtilOdds. A fit needs at least twice as many
distinct m as free parameters; with fewer, R² near 1 says nothing about the curve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from steerfront.errors import SteerfrontError

KINDS = ("pref", "util")
DECAY_NAMES = ("m_pos", "L_pos", "p_pos", "m_neg", "L_neg", "p_neg")
LINEAR_NAMES = {"pref": ("alpha", "beta", "b"), "util": ("beta", "b")}
FREE_PARAMETERS = {kind: len(LINEAR_NAMES[kind]) + len(DECAY_NAMES) - 1 for kind in KINDS}

# Search bounds in normalised units (m divided by max|m|); L and p are searched as logs.
_CENTRE_BOUND = 2.0
_LOG_L_BOUNDS = (float(np.log(1e-4)), float(np.log(1e4)))
_LOG_P_BOUNDS = (float(np.log(1e-3)), float(np.log(50.0)))
# Start centres no closer to 0 than this (normalised units).
_NEAR_ZERO = 0.02
# A solution counts as continuous when the log-branches differ by at most this at m = 0.
FEASIBLE_TOL = 1e-6


def decay(
    m: np.ndarray,
    m_pos: float,
    L_pos: float,
    p_pos: float,
    m_neg: float,
    L_neg: float,
    p_neg: float,
) -> np.ndarray:
    """The validity decay D(m): how much of the steered effect survives at strength m."""
    m = np.asarray(m, dtype=np.float64)
    pos = m >= 0
    centre = np.where(pos, m_pos, m_neg)
    scale = np.where(pos, L_pos, L_neg)
    power = np.where(pos, p_pos, p_neg)
    return np.exp(-power * np.log1p((m - centre) ** 2 / scale))


@dataclass(frozen=True)
class CurveFit:
    """A fitted PrefOdds or UtilOdds curve, in the data's own units."""

    kind: str
    params: dict[str, float]
    r2: float  # on the data it was fitted to

    def predict(self, m: np.ndarray) -> np.ndarray:
        """The fitted curve at strengths m."""
        return _curve(self.params, np.asarray(m, dtype=np.float64))

    def r2_on(self, m: np.ndarray, y: np.ndarray) -> float:
        """R² of this curve on other data (transfer); negative when worse than y's mean."""
        m, y = _as_curve(m, y)
        return _r2(y, self.predict(m))


def fit_curve(
    m: np.ndarray, y: np.ndarray, kind: str, restarts: int = 8, seed: int = 0
) -> CurveFit:
    """Least-squares fit of the §5 curve of `kind` to the points (m, y)."""
    if kind not in KINDS:
        raise SteerfrontError(f"fit: kind must be 'pref' or 'util', got {kind!r}")
    if restarts < 1:
        raise SteerfrontError(f"fit: restarts must be at least 1, got {restarts}")
    m, y = _as_curve(m, y)
    problem = grid_problem(m, kind)
    if problem:
        raise SteerfrontError(f"fit: {problem}")
    if np.ptp(y) == 0:
        raise SteerfrontError("fit: y is constant, so there is no curve to fit")

    m_scale, y_shift, y_scale = float(np.abs(m).max()), float(y.mean()), float(y.std())
    problem = _Problem(m / m_scale, (y - y_shift) / y_scale, kind)
    best: tuple[float, np.ndarray] | None = None
    for start in problem.starts(restarts, np.random.default_rng(seed)):
        res = minimize(
            problem.objective,
            start,
            jac=True,
            method="SLSQP",
            bounds=problem.bounds,
            constraints=[{"type": "eq", "fun": problem.gap, "jac": problem.gap_grad}],
            options={"maxiter": 500, "ftol": 1e-12},
        )
        theta = np.clip(res.x, *np.array(problem.bounds).T)
        if abs(problem.gap(theta)) > FEASIBLE_TOL:
            continue
        loss = problem.objective(theta)[0]
        if best is None or loss < best[0]:
            best = (loss, theta)
    if best is None:
        raise SteerfrontError(f"fit: no {kind} fit met the continuity constraint at m = 0")

    theta = best[1]
    coef = problem.coefficients(problem.decay_and_grad(theta)[0])
    params = {
        "m_pos": theta[0] * m_scale,
        "L_pos": np.exp(theta[1]) * m_scale**2,
        "p_pos": np.exp(theta[2]),
        "m_neg": theta[3] * m_scale,
        "L_neg": np.exp(theta[4]) * m_scale**2,
        "p_neg": np.exp(theta[5]),
    }
    if kind == "pref":
        params["alpha"] = coef[0] * y_scale / m_scale
    params["beta"] = coef[-2] * y_scale
    params["b"] = coef[-1] * y_scale + y_shift
    params = {name: float(params[name]) for name in LINEAR_NAMES[kind] + DECAY_NAMES}
    return CurveFit(kind, params, r2=_r2(y, _curve(params, m)))


def grid_problem(m: np.ndarray, kind: str) -> str | None:
    """Why a `kind` fit cannot use strengths m (None if it can), so callers can refuse a grid
    before computing anything: each branch needs its own sign of m, and the free parameters need
    twice as many distinct m."""
    m = np.asarray(m, dtype=np.float64)
    if not (m < 0).any() or not (m > 0).any():
        missing = "m < 0" if not (m < 0).any() else "m > 0"
        return f"needs m of both signs (one decay branch each), none with {missing}"
    distinct, free = np.unique(m).size, FREE_PARAMETERS[kind]
    if distinct < 2 * free:
        return (
            f"{distinct} distinct m, but the {kind} fit has {free} free parameters and needs "
            f"at least {2 * free} distinct m"
        )
    return None


@dataclass(frozen=True)
class FitReport:
    """One kind of curve fitted on train and on test; transfer is train's curve on test."""

    train: CurveFit
    test: CurveFit
    r2_transfer: float

    def numbers(self) -> dict:
        """The paper's three R² numbers and the train fit's parameters, JSON-ready."""
        return {
            "params": self.train.params,
            "r2_train": self.train.r2,
            "r2_test": self.test.r2,
            "r2_transfer": self.r2_transfer,
        }


def fit_report(
    m_train: np.ndarray,
    y_train: np.ndarray,
    m_test: np.ndarray,
    y_test: np.ndarray,
    kind: str,
) -> FitReport:
    """Fit train and test curves separately and apply the train fit to the test curve."""
    fits = {}
    for split, m, y in (("train", m_train, y_train), ("test", m_test, y_test)):
        try:
            fits[split] = fit_curve(m, y, kind)
        except SteerfrontError as err:
            raise SteerfrontError(f"{split} curve: {err}") from None
    return FitReport(fits["train"], fits["test"], fits["train"].r2_on(m_test, y_test))


def _as_curve(m: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points of one curve as float arrays, refusing shapes and values a fit cannot use."""
    m, y = np.asarray(m, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if m.ndim != 1 or m.shape != y.shape:
        raise SteerfrontError(
            f"fit: m and y must be 1-D and of equal length, got shapes {m.shape} and {y.shape}"
        )
    if not (np.isfinite(m).all() and np.isfinite(y).all()):
        raise SteerfrontError("fit: m and y must be finite, found NaN or inf")
    return m, y


def _curve(params: dict[str, float], m: np.ndarray) -> np.ndarray:
    d = decay(m, *(params[name] for name in DECAY_NAMES))
    return (params.get("alpha", 0.0) * m + params["beta"]) * d + params["b"]


def _r2(y: np.ndarray, predicted: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    if total == 0:
        raise SteerfrontError("fit: y is constant, so R² is undefined")
    return 1.0 - float(((y - predicted) ** 2).sum()) / total


class _Problem:
    """The fit in normalised units (u = m / max|m|, z standardised y).

    theta = (m_pos, log L_pos, log p_pos, m_neg, log L_neg, log p_neg); logs keep L and p
    positive and make their steps scale-free.
    """

    def __init__(self, u: np.ndarray, z: np.ndarray, kind: str) -> None:
        self.u, self.z, self.kind = u, z, kind
        self.sides = ((u >= 0, 0), (u < 0, 3))
        self.bounds = [(-_CENTRE_BOUND, _CENTRE_BOUND), _LOG_L_BOUNDS, _LOG_P_BOUNDS] * 2

    def decay_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """D at every u, and its derivatives with respect to theta (n x 6)."""
        d = np.empty(self.u.size)
        grad = np.zeros((self.u.size, 6))
        for mask, col in self.sides:
            centre, scale, power = theta[col], np.exp(theta[col + 1]), np.exp(theta[col + 2])
            dx = self.u[mask] - centre
            sq = dx * dx
            log_base = np.log1p(sq / scale)
            d_side = np.exp(-power * log_base)
            d[mask] = d_side
            grad[mask, col] = d_side * power * 2 * dx / (scale + sq)
            grad[mask, col + 1] = d_side * power * sq / (scale + sq)
            grad[mask, col + 2] = -d_side * power * log_base
        return d, grad

    def basis(self, d: np.ndarray) -> np.ndarray:
        columns = [self.u * d, d] if self.kind == "pref" else [d]
        return np.column_stack([*columns, np.ones_like(d)])

    def coefficients(self, d: np.ndarray) -> np.ndarray:
        """The best linear coefficients ((alpha,) beta, b) for decay values d."""
        return np.linalg.lstsq(self.basis(d), self.z, rcond=None)[0]

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Half mean squared residual and its gradient (envelope theorem: the coefficients are
        optimal, so only D's dependence on theta contributes)."""
        d, d_grad = self.decay_and_grad(theta)
        coef = self.coefficients(d)
        resid = self.basis(d) @ coef - self.z
        weight = coef[0] * self.u + coef[1] if self.kind == "pref" else coef[0]
        n = self.u.size
        return 0.5 * float(resid @ resid) / n, ((weight * resid) @ d_grad) / n

    def gap(self, theta: np.ndarray) -> float:
        """p_pos·log1p(m_pos²/L_pos) - p_neg·log1p(m_neg²/L_neg): log D_-(0) - log D_+(0), zero
        when the branches meet at m = 0 (the log form stays well scaled for any p)."""
        return sum(sign * self._log_gap_term(theta, col) for sign, col in ((1, 0), (-1, 3)))

    def gap_grad(self, theta: np.ndarray) -> np.ndarray:
        """Exact gradient of `gap`, so SLSQP needs no finite differences for the constraint."""
        grad = np.zeros(6)
        for sign, col in ((1, 0), (-1, 3)):
            centre, scale, power = theta[col], np.exp(theta[col + 1]), np.exp(theta[col + 2])
            sq = centre * centre
            grad[col] = sign * power * 2 * centre / (scale + sq)
            grad[col + 1] = -sign * power * sq / (scale + sq)
            grad[col + 2] = sign * self._log_gap_term(theta, col)
        return grad

    @staticmethod
    def _log_gap_term(theta: np.ndarray, col: int) -> float:
        return float(np.exp(theta[col + 2]) * np.log1p(theta[col] ** 2 / np.exp(theta[col + 1])))

    def starts(self, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Two data-driven starts, then seeded random ones, all (near) continuous at 0.

        Data-driven: both centres near 0, or both at the point farthest from the far-field level
        (the utility peak); L ~ (range of m)^2/4 or /16 and p ~ 1 or 1/2. Equal centres, L and p
        on both sides meet at 0 exactly. Centres are kept off exactly 0, where the constraint's
        gradient vanishes and SLSQP cannot take a step. Random starts solve p_neg from the
        constraint.
        """
        width = float(np.ptp(self.u))
        far = np.abs(self.u) >= np.abs(self.u).max() - 1e-12
        peak = float(np.clip(self.u[np.argmax(np.abs(self.z - self.z[far].mean()))], -0.5, 0.5))
        peak = float(np.copysign(max(abs(peak), _NEAR_ZERO), peak))
        log_l = np.log(width**2 / 4)
        heuristic = [
            np.array([_NEAR_ZERO, log_l, 0.0] * 2),
            np.array([peak, log_l - np.log(4), np.log(0.5)] * 2),
        ]
        starts = heuristic[:count]
        while len(starts) < count:
            theta = np.array(
                [
                    rng.uniform(-0.5, 0.5),
                    log_l + rng.uniform(-3, 2),
                    rng.uniform(np.log(0.2), np.log(5)),
                    rng.uniform(-0.5, 0.5),
                    log_l + rng.uniform(-3, 2),
                    0.0,
                ]
            )
            target = self._log_gap_term(theta, 0)
            base = np.log1p(theta[3] ** 2 / np.exp(theta[4]))
            theta[5] = np.clip(np.log(max(target, 1e-300) / base), *_LOG_P_BOUNDS)
            starts.append(theta)
        return starts
