import numpy as np
import pytest
from optuna.trial import FixedTrial

from steerfront.search.space import Sampler, SearchSpace, layer_weights, top_layers


def first(space: SearchSpace) -> list[tuple[str, str]]:
    points = Sampler(space, [1]).first_points()
    return [(p["form"], p[f"objective_{p['form']}"]) for p in points]


def test_the_first_trials_cover_every_form_then_every_objective():
    assert first(SearchSpace()) == [
        ("vector", "split"),
        ("lora", "sft"),
        ("local_weight", "reps"),
        ("vector", "diffmean"),
    ]


def test_diffmean_goes_to_the_vector_form_or_nowhere():
    assert first(SearchSpace(forms=["lora", "vector"], objectives=["diffmean", "sft"])) == [
        ("lora", "sft"),
        ("vector", "diffmean"),
    ]
    assert first(SearchSpace(forms=["lora"], objectives=["diffmean", "sft"])) == [("lora", "sft")]


# --- the layer prior ------------------------------------------------------------------------------

LAYERS = [7, 10, 13, 16, 19, 22]
SCORES = (0.1, 0.5, 0.9, 1.2, 1.0, 0.3)


def proposals(sampler: Sampler, trials: int, seed: int = 0) -> list[dict]:
    """The configs a seeded TPE search proposes, the first points enqueued as Ray Tune does,
    on a fixed objective (preference grows with layer and m, utility falls with m)."""
    import optuna

    from steerfront.search.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize", "maximize"], sampler=make_sampler("tpe", trials, seed)
    )
    for point in sampler.first_points():
        study.enqueue_trial(point)
    configs = []

    def objective(trial):
        config = sampler(trial)
        configs.append(config)
        return config["layer"] / 10 + config["m"] / 20, -config["m"]

    study.optimize(objective, trials)
    return configs


def test_without_a_prior_the_proposals_are_those_of_before():
    """Pinned from the sampler before layer priors existed (same seed, same space)."""
    configs = proposals(Sampler(SearchSpace(), LAYERS), trials=14)
    assert "layer_q" not in configs[0]
    assert [(c["form"], c["objective"], c["layer"], round(c["m"], 6)) for c in configs] == [
        ("vector", "split", 10, 8.751744),
        ("lora", "sft", 7, 0.284144),
        ("local_weight", "reps", 13, 0.473098),
        ("vector", "diffmean", 13, 15.484674),
        ("lora", "split", 7, 2.667067),
        ("lora", "split", 10, 0.441501),
        ("local_weight", "sft", 7, 1.184561),
        ("local_weight", "sft", 19, 2.669642),
        ("lora", "sft", 22, 0.995013),
        ("lora", "split", 19, 2.901017),
        ("local_weight", "reps", 13, 0.080183),
        ("local_weight", "split", 22, 3.824237),
        ("lora", "sft", 22, 3.996859),
        ("local_weight", "reps", 16, 1.936717),
    ]


def test_layer_weights_give_higher_scores_more_room_and_keep_a_floor():
    weights = layer_weights(SCORES)
    assert weights.sum() == pytest.approx(1.0)
    assert list(np.argsort(weights)) == list(np.argsort(SCORES))  # same order as the scores
    assert weights.round(3).tolist() == [0.061, 0.095, 0.188, 0.354, 0.23, 0.074]
    assert weights.min() >= 0.25 / len(SCORES)  # every layer keeps a quarter of its even share
    # Scale-free (the priors share no scale), even for equal scores, NaN as the lowest score.
    assert layer_weights([10 * s + 3 for s in SCORES]) == pytest.approx(weights)
    assert layer_weights([2.0, 2.0, 2.0]) == pytest.approx([1 / 3] * 3)
    assert layer_weights([1.0, float("nan"), 0.0]) == pytest.approx(layer_weights([1, 0, 0]))


def test_the_layer_comes_from_layer_q_through_the_prior_weighted_cdf():
    sampler = Sampler(SearchSpace(forms=["vector"], objectives=["diffmean"]), LAYERS, SCORES)
    qs = (np.arange(10_000) + 0.5) / 10_000  # layer_q evenly over [0, 1)
    layers = [
        sampler(FixedTrial({"form": "vector", "layer_q": q, "m_vector": 1.0}))["layer"] for q in qs
    ]
    share = {layer: layers.count(layer) / len(qs) for layer in LAYERS}
    assert [share[layer] for layer in LAYERS] == pytest.approx(layer_weights(SCORES), abs=2e-4)
    assert share[16] > 5 * share[7]  # the best layer takes over five times the worst's room
    assert sampler(FixedTrial({"form": "vector", "layer_q": 1.0, "m_vector": 1.0}))["layer"] == 22
    assert sorted(set(layers)) == LAYERS  # neighbouring intervals, every layer reachable


def test_the_first_trials_take_the_priors_three_best_layers_in_turn():
    sampler = Sampler(SearchSpace(), LAYERS, SCORES)
    points = sampler.first_points()
    assert [(p["form"], p[f"objective_{p['form']}"]) for p in points] == first(SearchSpace())
    chosen = [proposals(sampler, trials=len(points))[j]["layer"] for j in range(len(points))]
    assert chosen == [16, 19, 13, 16]
    assert top_layers(LAYERS, SCORES, 3) == [16, 19, 13]
    assert top_layers(LAYERS, SCORES, 2) == [16, 19]
    tied = top_layers([3, 1, 2], [0.5, float("nan"), 0.5], 3)
    assert tied == [2, 3, 1]  # a tie goes to the lower layer; NaN last
