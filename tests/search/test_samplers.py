import pickle

import optuna
import pytest

from steerfront.search.samplers import make_sampler


@pytest.mark.parametrize("name", ["tpe", "nsga2", "random"])
def test_every_sampler_survives_the_pickle_ray_tune_saves(name):
    sampler = make_sampler(name, trials=8, seed=0)
    copy = pickle.loads(pickle.dumps(sampler))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=copy)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), -t.suggest_float("y", 0, 1)), 6)
    assert len(study.trials) == 6


def test_nsga2_generation_is_a_quarter_of_the_budget_within_4_to_50():
    assert make_sampler("nsga2", trials=8, seed=0)._population_size == 4
    assert make_sampler("nsga2", trials=100, seed=0)._population_size == 25
    assert make_sampler("nsga2", trials=1000, seed=0)._population_size == 50


def test_same_seed_same_proposals_after_a_pickle():
    def first(sampler):
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 0.0), 5)
        return [t.params["x"] for t in study.trials]

    assert first(make_sampler("nsga2", 8, 3)) == first(
        pickle.loads(pickle.dumps(make_sampler("nsga2", 8, 3)))
    )
