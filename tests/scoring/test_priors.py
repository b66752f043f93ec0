import math

import numpy as np
import pytest
import torch

from steerfront.data import PairSet, encode_pairs, load_concept
from steerfront.errors import SteerfrontError
from steerfront.methods import diffmean
from steerfront.methods.train import span_means
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.priors import (
    check_layers,
    gain_at_kl,
    layer_scores,
    lens,
    m_at_kl,
    navigator,
    recommend,
    window_layers,
)

PAIRS = PairSet("few", load_concept("agreeableness").pairs[:10])


def plain_navigator(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """The module docstring's formulas for one layer, with the scatter matrices written out."""
    v = (pos - neg).mean(0)
    everything = np.concatenate([pos, neg])
    mu = everything.mean(0)
    s_b = sum(len(x) * np.outer(x.mean(0) - mu, x.mean(0) - mu) for x in (pos, neg))
    s_t = sum(np.outer(x - mu, x - mu) for x in everything)
    d = (v @ s_b @ v) / (v @ s_t @ v)
    diffs = pos - neg
    c = np.mean([x @ v / (np.linalg.norm(x) * np.linalg.norm(v)) for x in diffs])
    return d, c


def test_navigator_matches_the_scatter_matrices_on_random_activations():
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(7, 3, 5)) + np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    neg = rng.normal(size=(7, 3, 5))
    d, c = navigator(torch.tensor(pos), torch.tensor(neg))
    for layer in range(3):
        ref_d, ref_c = plain_navigator(pos[:, layer], neg[:, layer])
        assert d[layer] == pytest.approx(ref_d, abs=1e-10)
        assert c[layer] == pytest.approx(ref_c, abs=1e-10)
    assert ((0 <= d) & (d <= 1)).all()


def test_navigator_known_answers():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 4))
    shift = np.array([0.0, 2.0, 0.0, 0.0])
    # every positive projects to one value, every negative to another; all differences parallel
    off_axis = base.copy()
    off_axis[:, 1] = 0.0
    pos, neg = off_axis + shift, off_axis.copy()
    d, c = navigator(torch.tensor(pos), torch.tensor(neg))
    assert d[()] == pytest.approx(1.0) and c[()] == pytest.approx(1.0)
    # half the differences point the other way: v is their mean, c = 0 on the reversed half
    neg_mixed = neg.copy()
    neg_mixed[:3] = pos[:3] + shift
    d, c = navigator(torch.tensor(pos), torch.tensor(neg_mixed))
    assert c[()] == pytest.approx(0.0, abs=1e-12)
    # identical classes: no direction at all
    d, c = navigator(torch.tensor(base), torch.tensor(base))
    assert d[()] == 0 and c[()] == 0


def test_span_means_give_diffmean_and_its_vectors_are_unchanged(tiny_lm):
    encoded = encode_pairs(tiny_lm.tokenizer, PAIRS)
    pos, neg = span_means(tiny_lm, encoded)
    assert pos.shape == (len(encoded), tiny_lm.n_layers, tiny_lm.hidden_size)
    torch.testing.assert_close((pos - neg).mean(0), diffmean(tiny_lm, encoded), atol=1e-5, rtol=0)
    e = encoded[3]  # one pair by the plain forward, one completion at a time
    for completion, got in ((e.positive, pos[3]), (e.negative, neg[3])):
        with torch.no_grad():
            states = tiny_lm.model(
                input_ids=torch.tensor([e.prompt + completion]), output_hidden_states=True
            ).hidden_states
        for layer in range(tiny_lm.n_layers - 1):  # the last entry is after the final norm
            expected = states[layer + 1][0, len(e.prompt) :].mean(0)
            torch.testing.assert_close(got[layer], expected, atol=1e-4, rtol=0)


def test_lens_matches_a_plain_full_model_reference(tiny_lm):
    encoded = encode_pairs(tiny_lm.tokenizer, PAIRS)
    model = tiny_lm.model
    vectors = torch.zeros(tiny_lm.n_layers - 1, tiny_lm.hidden_size)
    for e in encoded:  # DiffMean's vectors by the plain forward
        for completion, sign in ((e.positive, 1), (e.negative, -1)):
            with torch.no_grad():
                states = model(
                    input_ids=torch.tensor([e.prompt + completion]), output_hidden_states=True
                ).hidden_states
            for layer in range(tiny_lm.n_layers - 1):
                vectors[layer] += sign * states[layer + 1][0, len(e.prompt) :].mean(0)
    vectors /= len(encoded)
    expected = []
    for v in vectors:
        with torch.no_grad():
            z = model.lm_head(model.model.norm(v)).double()
        cap = getattr(model.config, "final_logit_softcapping", None)
        if cap:
            z = torch.tanh(z / cap) * cap
        z = ((z - z.mean()) / z.std()).numpy()
        expected.append(
            np.mean([z[list(e.positive)].mean() - z[list(e.negative)].mean() for e in encoded])
        )
    got = lens(tiny_lm, vectors, encoded)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(lens(tiny_lm, 7.5 * vectors, encoded), got, atol=1e-4)


def test_m_at_kl_finds_the_crossing():
    for power, a in ((2.0, 3.0), (1.0, 0.5), (2.0, 1e-6)):
        m = m_at_kl(lambda grid, a=a, p=power: a * np.asarray(grid) ** p, 0.1, scale=1.0)
        assert m == pytest.approx((0.1 / a) ** (1 / power), rel=1e-9)
    # not a power law: within the last bracket's interpolation error
    m = m_at_kl(lambda grid: np.expm1(np.asarray(grid)) ** 2, 0.1, scale=4.0)
    assert m == pytest.approx(math.log1p(math.sqrt(0.1)), rel=0.01)
    calls = []
    m_at_kl(lambda grid: calls.append(len(grid)) or np.asarray(grid) ** 2, 0.1, scale=1.0)
    assert calls == [8, 3]  # one batched grid, one batched refinement
    assert math.isnan(m_at_kl(lambda grid: np.zeros(len(grid)), 0.1, scale=1.0))
    with pytest.raises(SteerfrontError, match="kl target"):
        m_at_kl(lambda grid: grid, 0.0, scale=1.0)


def fake_kl(intervention, m):
    """kl = (m·|v|)²/2: a quadratic like the true kl near 0, known in closed form."""
    return 0.5 * (np.asarray(m) * float(intervention.params["v"].norm())) ** 2


def test_gain_at_kl_scores_the_vector_at_the_kl_fixed_m(tiny_lm):
    encoded = encode_pairs(tiny_lm.tokenizer, PAIRS)
    vectors = diffmean(tiny_lm, encoded)
    from steerfront.methods.interventions import Intervention

    interventions = [Intervention("vector", layer, {"v": vectors[layer]}) for layer in (1, 2)]
    scales = [1.0 / float(vectors[layer].norm()) for layer in (1, 2)]  # a shift of unit length
    gain, m = gain_at_kl(tiny_lm, interventions, scales, encoded[:4], fake_kl, target=0.1)
    base = evaluate(tiny_lm, encoded[:4]).pref.mean()

    for j, layer in enumerate([1, 2]):
        norm = float(vectors[layer].norm())
        assert m[j] == pytest.approx(math.sqrt(0.2) / norm, rel=1e-6)
        steered = evaluate(
            tiny_lm, encoded[:4], Intervention("vector", layer, {"v": vectors[layer]}), m=m[j]
        )
        assert gain[j] == pytest.approx(steered.pref.mean() - base, abs=1e-5)


def test_layer_scores_rows_and_recommendation(tiny_lm):
    encoded = encode_pairs(tiny_lm.tokenizer, PAIRS)
    scores = layer_scores(tiny_lm, encoded[:7], encoded[7:], top=2, kl_of=fake_kl)
    assert scores.layers == list(range(tiny_lm.n_layers))
    assert len(scores.recommended) == 2
    first, last = scores.window
    assert all(first <= layer <= last for layer in scores.recommended)
    rows = scores.rows()
    assert [r["layer"] for r in rows] == scores.layers
    assert all(r["gain"] is not None and r["m"] > 0 for r in rows)
    assert {r["layer"] for r in rows if r["recommended"]} == set(scores.recommended)
    best = min(r["rank"] for r in rows if r["in_window"])
    assert rows[scores.recommended[0]]["rank"] == best
    without = layer_scores(tiny_lm, encoded[:7], None, layers=[2, 1])
    assert without.layers == [1, 2] and without.gain is None
    np.testing.assert_allclose(without.d, scores.d[1:3], atol=1e-6)


def test_recommend_ranks_inside_the_window():
    layers = [0, 1, 2, 3, 4, 5]
    columns = {
        "score": np.array([9.0, 1, 2, 3, 4, 0]),
        "lens": np.array([9.0, 1, 3, 2, 4, 0]),
        "gain": np.array([9.0, 1, 2, 3, np.nan, 0]),
    }
    picked, rank = recommend(layers, columns, window=(1, 4), top=2)
    # mean ranks 1: 11/3, 2: 7/3, 3: 2, 4: 2 (its missing gain ranks last); the tie goes to
    # the higher gain; 0 and 5 are outside the window
    assert picked == [3, 4]
    np.testing.assert_allclose(rank[1:5], [11 / 3, 7 / 3, 2, 2])
    assert np.isnan(rank[0]) and np.isnan(rank[5])
    picked, _ = recommend(layers, columns, window=(0, 5), top=1)
    assert picked == [0]
    with pytest.raises(SteerfrontError, match="top"):
        recommend(layers, columns, window=(0, 5), top=0)


def test_window_and_layer_checks():
    assert window_layers(30, (0.2, 0.9)) == (6, 27)
    assert window_layers(4, (0.0, 1.0)) == (0, 3)
    with pytest.raises(SteerfrontError, match="window"):
        window_layers(30, (0.9, 0.2))
    assert check_layers([3, 1, 3], 4) == [1, 3]
    with pytest.raises(SteerfrontError, match="layer 4 is out of range"):
        check_layers([1, 4], 4)
    with pytest.raises(SteerfrontError, match="no layers"):
        check_layers([], 4)


def test_neutral_kl_through_the_kl_module(tiny_lm):
    from steerfront.scoring.priors import neutral_kl

    encoded = encode_pairs(tiny_lm.tokenizer, PAIRS)
    vectors = diffmean(tiny_lm, encoded)
    from steerfront.methods.interventions import Intervention

    kl_of = neutral_kl(tiny_lm, prompts=2, tokens=4)
    kls = kl_of(Intervention("vector", 1, {"v": vectors[1]}), np.array([0.0, 1.0, 4.0]))
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and 0 < kls[1] < kls[2]
