"""The search's figures (`steerfront.search.report`): the baselines' marks in pareto.png and
judged.png, with and without the prompted model."""

import matplotlib
import pytest
from matplotlib.colors import to_rgba

from steerfront.search.report import plot_front, plot_judged

matplotlib.use("Agg")

POINT = {"trial_id": "t1", "form": "vector", "objective": "diffmean", "layer": 1, "m": 2.0,
         "pref_odds": 3.0, "util_odds": -2.5, "kl": 0.2, "status": "done"}  # fmt: skip
BASELINE = {"val_pref_odds": 1.0, "val_util_odds": -2.0, "val_kl": 0.0}
PROMPTED = {"val_pref_odds": 2.5, "val_util_odds": -2.4, "val_kl": 0.12}


@pytest.fixture
def figures(monkeypatch):
    """The figures drawn, kept open to read (pyplot's close records them instead)."""
    import matplotlib.pyplot as plt

    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)
    yield drawn
    for figure in drawn:
        matplotlib.pyplot.figure(figure.number)
        matplotlib.pyplot.clf()


def marks(figure):
    """Each labelled scatter of the figure's first axes: label -> (offsets, face colour)."""
    ax = figure.axes[0]
    return {
        c.get_label(): (c.get_offsets().tolist(), tuple(c.get_facecolor()[0]))
        for c in ax.collections
        if not c.get_label().startswith("_")
    }


def test_pareto_marks_the_prompted_model_in_orange_beside_the_unsteered_one(tmp_path, figures):
    setup = {"baseline": BASELINE, "prompted": PROMPTED}
    plot_front([POINT], [POINT], [POINT], setup, None, -3.0, tmp_path / "p.png")
    shown = marks(figures[-1])
    assert shown["unsteered"][0] == [[1.0, -2.0]]
    assert shown["prompted (instruction in the prompt)"] == ([[2.5, -2.4]], to_rgba("orange"))
    plot_front([POINT], [POINT], [POINT], setup, None, -3.0, tmp_path / "k.png",
               ("pref_odds", "kl"))  # fmt: skip
    assert marks(figures[-1])["prompted (instruction in the prompt)"][0] == [[2.5, 0.12]]
    before = {"baseline": BASELINE}  # a search made before the prompted baseline
    plot_front([POINT], [POINT], [POINT], before, None, -3.0, tmp_path / "o.png")
    assert set(marks(figures[-1])) == {"vector", "unsteered"}  # no prompted mark
    assert (tmp_path / "o.png").read_bytes()[:4] == b"\x89PNG"


def test_judged_png_marks_the_prompted_model_with_an_orange_edge(tmp_path, figures):
    judged = [
        {"point": 0, "pref_odds": 1.0, "util_odds": -2.0, "fluency": 0.9, "concept": 0.4,
         "judge": "local"},
        {"point": -1, "pref_odds": 2.5, "util_odds": -2.4, "fluency": 0.8, "concept": 0.7,
         "judge": "local"},
        {"point": 1, "pref_odds": 3.0, "util_odds": -2.5, "fluency": 0.5, "concept": 0.9,
         "judge": "local"},
    ]  # fmt: skip
    plot_judged([POINT], judged, tmp_path / "j.png")
    ax = figures[-1].axes[0]
    edges = {tuple(c.get_offsets()[0]): tuple(c.get_edgecolor()[0]) for c in ax.collections}
    assert edges[(2.5, -2.4)] == to_rgba("orange")
    assert edges[(1.0, -2.0)] == edges[(3.0, -2.5)] == to_rgba("black")
    assert len(edges) == 3
