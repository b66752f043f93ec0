"""Figures in the paper's style: preference solid, utility dashed, against m."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from steerfront.scoring.fit import FitReport  # noqa: E402

_COLOURS = {"train": "tab:blue", "test": "tab:orange"}


def plot_sweep(
    summary: list[dict], fits: dict[str, FitReport] | None, title: str, path: Path
) -> None:
    """Preference and utility log-odds against m for train and test, with the fitted curves
    unless the fits were skipped (None)."""
    m = np.array([row["m"] for row in summary])
    dense = np.linspace(m.min(), m.max(), 400)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for split, colour in _COLOURS.items():
        for column, style, kind in (("pref_odds", "-", "pref"), ("util_odds", "--", "util")):
            values = [row[f"{split}_{column}"] for row in summary]
            ax.plot(m, values, style, marker="o", ms=3, color=colour, label=f"{kind} ({split})")
            if fits is not None:
                curve = getattr(fits[kind], split)
                ax.plot(dense, curve.predict(dense), ":", color=colour, lw=1)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("m (steering strength)")
    ax.set_ylabel("log-odds")
    styles = "solid: preference, dashed: utility" + (", dotted: fitted" if fits is not None else "")
    ax.set_title(f"{title}\n({styles})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_manifold(summary: list[dict], title: str, path: Path) -> None:
    """Distance from the unsteered activation manifold beside test utility, against m."""
    m = np.array([row["m"] for row in summary])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(m, [r["off_manifold"] for r in summary], "-o", ms=3, label="off-manifold norm")
    ax.plot(m, [r["knn_distance"] for r in summary], "-s", ms=3, label="k-NN distance")
    ax.plot(m, [r["projection"] for r in summary], "-^", ms=3, label="projection on concept")
    ax.set_xlabel("m (steering strength)")
    ax.set_ylabel("activation distance")
    twin = ax.twinx()
    twin.plot(
        m, [r["test_util_odds"] for r in summary], "--", color="black", label="util_odds (test)"
    )
    twin.set_ylabel("util_odds")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
