"""Optuna samplers by name, each one that Ray Tune can pickle with the search state, Ray's
Optuna searcher with the kl constraint, and the searcher that lets several searches share
one Ray Tune experiment (a launch's concepts)."""

import base64
import json
import math
import tempfile
import threading
from pathlib import Path

import optuna
from ray.tune.search import Searcher
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


class FairShare(Searcher):
    """Several searches in one Ray Tune experiment: each has its own searcher (its own Optuna
    study) and trial budget, and the next free worker goes to the search that has started the
    fewest trials (a tie to the one named first), so a slow concept never starves the rest. A
    trial's config names its search (`search`), by which the trainable and the recorders find
    theirs."""

    def __init__(self, searchers: dict[str, Searcher], budgets: dict[str, int]) -> None:
        first = next(iter(searchers.values()))
        super().__init__(metric=first.metric, mode=first.mode)
        self.searchers, self.budgets = searchers, budgets
        self.started = dict.fromkeys(searchers, 0)
        self.owner: dict[str, str] = {}  # trial id -> its search
        # Tune saves the search state at every step of its loop (ten times a second): each
        # searcher's state is serialised again only once it has changed since.
        self.saved: dict[str, str] = {}
        self.changed = set(searchers)

    def suggest(self, trial_id: str) -> dict | str | None:
        open_ = [name for name in self.searchers if self.started[name] < self.budgets[name]]
        if not open_:
            return Searcher.FINISHED
        name = min(open_, key=lambda n: self.started[n])
        self.changed.add(name)
        config = self.searchers[name].suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        self.started[name] += 1
        self.owner[trial_id] = name
        return {**config, "search": name}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self.changed.add(self.owner[trial_id])
            self.searchers[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self.owner:
            self.changed.add(self.owner[trial_id])
            self.searchers[self.owner[trial_id]].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """Its own state as JSON, with each search's searcher state as that searcher saves it."""
        if self.changed:
            with tempfile.TemporaryDirectory() as tmp:
                for name in self.changed:
                    path = Path(tmp) / "searcher"
                    self.searchers[name].save(str(path))
                    self.saved[name] = base64.b64encode(path.read_bytes()).decode()
            self.changed = set()
        state = {"started": self.started, "budgets": self.budgets, "owner": self.owner}
        Path(checkpoint_path).write_text(json.dumps({**state, "searchers": self.saved}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        with tempfile.TemporaryDirectory() as tmp:
            for name, searcher in self.searchers.items():
                path = Path(tmp) / "searcher"
                path.write_bytes(base64.b64decode(state["searchers"][name]))
                searcher.restore(str(path))
        self.started, self.budgets, self.owner = state["started"], state["budgets"], state["owner"]
        self.saved, self.changed = state["searchers"], set()
