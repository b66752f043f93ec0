"""A vector sweep on the real default model shows the paper's shape (signs, not numbers)."""

import pytest

from steerfront.data import PairSet, load_concept
from steerfront.lm import load_model
from steerfront.methods import TrainSpec
from steerfront.scoring.sweep import run_sweep

pytestmark = pytest.mark.integration
# Too few m for the fits, which this test does not look at.
GRID = [-40.0, -2.0, 0.0, 2.0, 40.0]


def test_preference_rises_near_zero_and_utility_falls_far_out():
    lm = load_model()
    pairs = PairSet("sentiment", load_concept("sentiment").pairs[:80])
    splits = pairs.split(0.0, 0.25, seed=0)
    spec = TrainSpec(form="vector", layer=lm.n_layers // 2)
    result = run_sweep(lm, splits, spec, GRID, fits=False)
    rows = {row["m"]: row for row in result["summary"].to_pylist()}
    for split in ("train", "test"):
        pref = {m: rows[m][f"{split}_pref_odds"] for m in GRID}
        util = {m: rows[m][f"{split}_util_odds"] for m in GRID}
        assert pref[-2.0] < pref[0.0] < pref[2.0], (split, pref)
        assert util[40.0] < util[0.0] and util[-40.0] < util[0.0], (split, util)
    # Steering far pushes activations off the unsteered manifold, and utility falls with it.
    off = {m: rows[m]["off_manifold"] for m in GRID}
    assert off[40.0] > off[2.0] > off[0.0]
    assert result["manifold"]["corr_off_manifold_util_loss"] > 0.5
