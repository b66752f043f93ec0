"""Optuna samplers by name, each one that Ray Tune can pickle with the search state."""

import threading

import optuna


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
