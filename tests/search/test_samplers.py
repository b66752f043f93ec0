import pickle

import optuna
import pytest
from ray.tune.search import Searcher

from steerfront.search.samplers import ConstrainedOptunaSearch, FairShare, make_sampler


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


def fair_share(budgets: dict[str, int]) -> FairShare:
    from steerfront.search.space import Sampler, SearchSpace

    def searcher() -> ConstrainedOptunaSearch:
        sampler = Sampler(SearchSpace(), [3, 5, 7], None)
        return ConstrainedOptunaSearch(
            sampler,
            metric=["pref_odds", "util_odds"],
            mode=["max", "max"],
            sampler=make_sampler("tpe", 8, 0),
            max_kl=0.05,
        )

    return FairShare({name: searcher() for name in budgets}, budgets)


def test_fair_share_starts_the_search_with_the_fewest_trials_until_every_budget_is_spent():
    share = fair_share({"a": 1, "b": 3})
    owners = [share.suggest(f"t{i}")["search"] for i in range(4)]
    assert owners == ["a", "b", "b", "b"]
    assert share.suggest("t4") == Searcher.FINISHED


def test_fair_share_saves_a_searcher_again_only_once_it_has_changed(tmp_path, monkeypatch):
    share = fair_share({"a": 2, "b": 2})
    calls = []
    names = {id(searcher): name for name, searcher in share.searchers.items()}
    save = ConstrainedOptunaSearch.save  # patched on the class: an instance's is pickled

    def counted(self, path):
        calls.append(names[id(self)])
        save(self, path)

    monkeypatch.setattr(ConstrainedOptunaSearch, "save", counted)
    share.save(str(tmp_path / "state"))
    assert sorted(calls) == ["a", "b"]
    share.save(str(tmp_path / "state"))  # nothing changed: nothing serialised again
    assert sorted(calls) == ["a", "b"]
    trial = share.suggest("t0")
    share.on_trial_complete("t0", {"pref_odds": 1.0, "util_odds": -1.0, "kl": 0.01})
    share.save(str(tmp_path / "state"))
    assert sorted(calls) == ["a", "a", "b"]

    restored = fair_share({"a": 2, "b": 2})  # the saved state is the state after the change
    restored.restore(str(tmp_path / "state"))
    assert restored.started == {"a": 1, "b": 0} and restored.owner == {"t0": "a"}
    study = restored.searchers["a"]._ot_study
    assert [t.params for t in study.trials] == [
        {k: v for k, v in trial.items() if k in study.trials[0].params}
    ]
