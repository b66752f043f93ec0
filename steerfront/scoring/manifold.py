"""Manifold probes: how far steering pushes activations off the manifold of normal inputs.

PAPER.md §4 explains utility loss by steered activations leaving a low-dimensional "activation
manifold" of normally handled inputs, but never measures it. Here the manifold is approximated
two ways from the unsteered activations at one layer (one per test prompt):

- linearly, as the mean plus the principal subspace holding a given share of the variance; the
  off-manifold distance of a point is the norm of its centred component outside that subspace;
- locally, by the unsteered points themselves; the kNN distance of a point is its mean Euclidean
  distance to the nearest unsteered activations, which also sees moves along the subspace that
  leave the region the data occupies.

Callers supply the activations; nothing here touches a model. All arithmetic is float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steerfront.errors import SteerfrontError

_DTYPE = torch.float64
# Slack when comparing the cumulative explained variance with the target, so that rounding in the
# SVD cannot make e.g. variance=1.0 unreachable.
_VARIANCE_SLACK = 1e-12
# N points always fit in N - 1 dimensions, so a subspace from few points "explains" them
# whatever they are. A fit is a finding from this many points on, and from twice as many
# points as components (the rule the decay fits follow for their parameters).
MIN_POINTS = 10


# eq=False: the fields are tensors, whose elementwise == would make a generated __eq__ raise.
@dataclass(frozen=True, eq=False)
class Manifold:
    """The unsteered activations' mean, principal subspace and points (see `Manifold.fit`)."""

    mean: torch.Tensor  # (d,)
    basis: torch.Tensor  # (d, k), orthonormal columns
    points: torch.Tensor  # (N, d)
    k: int
    explained: float  # share of the total variance in the top-k subspace
    neighbours: int

    @classmethod
    def fit(cls, unsteered: torch.Tensor, variance: float = 0.9, neighbours: int = 5) -> Manifold:
        """Fit to unsteered activations (N, d): the smallest principal subspace reaching `variance`.

        `neighbours` is clamped to [1, N - 1], so a small N still works instead of failing: there
        must be at least one neighbour to average, and with N - 1 each unsteered point still
        averages over all but its farthest.
        """
        if not 0.0 < variance <= 1.0:
            raise SteerfrontError(f"manifold variance must be in (0, 1], got {variance}")
        if unsteered.ndim != 2 or unsteered.shape[0] < 2:
            raise SteerfrontError(
                f"manifold needs at least 2 unsteered activations as (N, d), "
                f"got shape {tuple(unsteered.shape)}"
            )
        points = unsteered.detach().to(_DTYPE).cpu()
        mean = points.mean(dim=0)
        _, singular, vh = torch.linalg.svd(points - mean, full_matrices=False)
        power = singular**2
        total = power.sum()
        if total <= 0:
            raise SteerfrontError("manifold unsteered activations are all identical (no variance)")
        cumulative = torch.cumsum(power, dim=0) / total
        k = int(torch.searchsorted(cumulative, variance - _VARIANCE_SLACK).item()) + 1
        k = min(k, len(cumulative))
        return cls(
            mean=mean,
            basis=vh[:k].T.contiguous(),
            points=points,
            k=k,
            explained=float(cumulative[k - 1]),
            neighbours=max(1, min(neighbours, points.shape[0] - 1)),
        )

    @property
    def reliable(self) -> bool:
        """Whether the fit has enough points to be a finding rather than an artefact."""
        return self.points.shape[0] >= max(MIN_POINTS, 2 * self.k)

    def _as_points(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != self.mean.shape:
            raise SteerfrontError(
                f"manifold points have dimension {self.mean.shape[0]}, got shape {tuple(x.shape)}"
            )
        return x.detach().to(_DTYPE).cpu()

    def off_manifold(self, x: torch.Tensor) -> torch.Tensor:
        """Norm of the part of (x - mean) outside the principal subspace, for points (..., d)."""
        centred = self._as_points(x) - self.mean
        residual = centred - (centred @ self.basis) @ self.basis.T
        return torch.linalg.vector_norm(residual, dim=-1)

    def knn_distance(self, x: torch.Tensor) -> torch.Tensor:
        """Mean Euclidean distance from each point (..., d) to its nearest unsteered activations.

        An unsteered point's distance to itself (0) is included: at m = 0 it is one of the
        `neighbours` nearest, so there the value is the summed distance to the `neighbours` - 1
        nearest other points, divided by `neighbours`.
        """
        flat = self._as_points(x).reshape(-1, self.mean.shape[0])
        # Direct differences, not the matrix-product shortcut, so that distance 0 comes out as 0.
        distances = torch.cdist(flat, self.points, compute_mode="donot_use_mm_for_euclid_dist")
        nearest = distances.topk(self.neighbours, dim=1, largest=False).values
        return nearest.mean(dim=1).reshape(x.shape[:-1])


def _mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    n = values.numel()
    se = float(values.std(correction=1)) / math.sqrt(n) if n > 1 else math.nan
    return float(values.mean()), se


def measure(
    manifold: Manifold, steered: torch.Tensor, direction: torch.Tensor, ms: Sequence[float]
) -> list[dict]:
    """Per steering strength m, how far the steered activations (K, N, d) moved and left.

    `projection` is the mean over prompts of (x - manifold mean)·unit direction: how far along
    the concept the steering got; `off_manifold` and `knn_distance` (with standard errors over
    prompts) are how far it got from the normal inputs. `direction` is normalised here.
    """
    if steered.ndim != 3 or steered.shape[0] != len(ms):
        raise SteerfrontError(
            f"manifold steered activations must be (K, N, d) with K = {len(ms)} values of m, "
            f"got shape {tuple(steered.shape)}"
        )
    if direction.shape != manifold.mean.shape:
        raise SteerfrontError(
            f"manifold direction must have shape {tuple(manifold.mean.shape)}, "
            f"got {tuple(direction.shape)}"
        )
    unit = direction.detach().to(_DTYPE).cpu()
    norm = torch.linalg.vector_norm(unit)
    if norm == 0:
        raise SteerfrontError("manifold direction is zero")
    unit = unit / norm
    points = manifold._as_points(steered)
    projections = (points - manifold.mean) @ unit
    off = manifold.off_manifold(points)
    knn = manifold.knn_distance(points)
    rows = []
    for i, m in enumerate(ms):
        off_mean, off_se = _mean_and_se(off[i])
        knn_mean, knn_se = _mean_and_se(knn[i])
        rows.append(
            {
                "m": float(m),
                "projection": float(projections[i].mean()),
                "off_manifold": off_mean,
                "off_manifold_se": off_se,
                "knn_distance": knn_mean,
                "knn_distance_se": knn_se,
            }
        )
    return rows


def correlation(off_manifold: Sequence[float], util_loss: Sequence[float]) -> float:
    """Pearson correlation of off-manifold distance and utility loss across the values of m.

    This is the direct test of the manifold explanation (positive if leaving the manifold goes
    with losing utility). Returns nan when either sequence has zero variance, where the
    correlation is undefined.
    """
    a = np.asarray(off_manifold, dtype=float)
    b = np.asarray(util_loss, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise SteerfrontError(
            f"manifold correlation needs two equal-length sequences of at least 2 values, "
            f"got {a.size} and {b.size}"
        )
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])
