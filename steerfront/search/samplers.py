"""Optuna samplers by name, each one that Ray Tune can pickle with the search state, and Ray's
Optuna searcher with the kl constraint."""

import math
import threading

import optuna
from ray.tune.search.optuna import OptunaSearch


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II without its thread lock in the pickle.

    Optuna 5.1 keeps a `threading.Lock` on genetic samplers; Ray Tune pickles the searcher to
    save the search state, so the stock sampler fails every `--sampler nsga2` search.
    """

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


def make_sampler(name: str, trials: int, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler a search asked for by name."""
    if name == "nsga2":
        # A generation per quarter of the budget (Optuna's 50 would leave a small search in its
        # random first generation).
        return NSGAIISampler(population_size=min(50, max(4, trials // 4)), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


class ConstrainedOptunaSearch(OptunaSearch):
    """Ray's `OptunaSearch` that tells Optuna each trial's kl constraint (`kl - max_kl`,
    feasible at 0 or less) before its result: TPE and NSGA-II sample away from infeasible
    trials (Optuna's `Trial.set_constraint`; the random sampler ignores it). Without a finite
    `max_kl` it is Ray's searcher unchanged."""

    def __init__(self, *args: object, max_kl: float = math.inf, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._max_kl = max_kl

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        kl = (result or {}).get("kl")
        trial = self._ot_trials.get(trial_id)
        if (
            math.isfinite(self._max_kl)
            and trial is not None
            and trial_id not in self._completed_trials
            and isinstance(kl, int | float)
            and math.isfinite(kl)
        ):
            trial.set_constraint("kl", float(kl) - self._max_kl)
        super().on_trial_complete(trial_id, result, error)
