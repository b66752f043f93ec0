"""Writing a sweep's results: tables, fits, figures and the intervention, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from steerfront.files import staged_dir
from steerfront.lm import LM
from steerfront.methods.io import save_intervention
from steerfront.scoring.plots import plot_manifold, plot_sweep


def write_sweep(result: dict, out: Path, lm: LM, title: str) -> None:
    """Write into a staging folder, then move it onto `out` (an interrupted sweep leaves none).

    `fits.json` only when the sweep was fitted, so a missing file says the fits were skipped.
    """
    with staged_dir(Path(out), replace=True) as folder:
        pq.write_table(result["pairs"], folder / "pairs.parquet")
        pq.write_table(result["summary"], folder / "summary.parquet")
        summary = result["summary"].to_pylist()
        if result["fits"] is not None:
            fits = {kind: report.numbers() for kind, report in result["fits"].items()}
            (folder / "fits.json").write_text(json.dumps(fits, indent=2))
        (folder / "manifold.json").write_text(json.dumps(result["manifold"], indent=2))
        plot_sweep(summary, result["fits"], title, folder / "sweep.png")
        manifold = result["manifold"]
        if not manifold["reliable"]:
            title += f"\n(manifold unreliable: {manifold['points']} points, k = {manifold['k']})"
        plot_manifold(summary, title, folder / "manifold.png")
        save_intervention(result["intervention"], folder / "intervention", lm)
