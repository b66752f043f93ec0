"""How and where a search runs, and the name of the state file it keeps: what the driver
(`run`), a judge pass (`judged`) and the commands share."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from steerfront.defaults import DTYPES, LAYER_PRIORS, SEARCH
from steerfront.errors import SteerfrontError
from steerfront.search import axes
from steerfront.search.storage import Store
from steerfront.search.tracking import tracking_uri

STATE = "search.json"


@dataclass
class SearchSettings:
    """How and where a search runs (the space says what it searches)."""

    name: str
    model: str
    concept: str
    fmt: str | None = None
    trials: int = SEARCH["trials"]
    sampler: str = SEARCH["sampler"]
    seed: int = SEARCH["seed"]
    concurrency: int | None = None  # None: as many as the CPUs (or GPUs) allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    val_fraction: float = SEARCH["val_fraction"]
    test_fraction: float = SEARCH["test_fraction"]
    storage: str = SEARCH["storage"]
    tracking_uri: str | None = None
    address: str | None = None
    retries: int = 1  # a trial whose worker dies is run again this many times, then failed
    end_of_turn: bool = False  # score each completion with the turn's end
    per_token: bool = False  # score each completion by its mean NLL per token
    dtype: str = "auto"  # the model's, by name (DTYPES); auto is resolved in each worker
    dense_m: int = SEARCH["dense_m"]  # extra values of m scored per trial (extended front)
    cache_gb: float | None = None  # a worker's cache budget; None: from its device's memory
    util_floor: float = SEARCH["util_floor"]  # hypervolume's reference below unsteered utility
    front_objectives: tuple[str, ...] = tuple(SEARCH["front_objectives"])  # (axes.CHOICES)
    max_kl: float = SEARCH["max_kl"]  # a point above it is infeasible: kept, never on the front
    neutral_prompts: str | None = None  # kl's neutral prompts file; None: the built-in set
    layer_prior: str = SEARCH["layer_prior"]  # weights the layer choice (LAYER_PRIORS)
    top_layers: int | None = None  # keep only this many layers, the prior's best
    judge: dict | None = None  # a judge pass when the search ends (JudgeSettings' fields)
    quiet: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name) or ".." in self.name:
            raise SteerfrontError(
                f"search name {self.name!r}: use letters, digits, '.', '_' and '-' only "
                "(a name is a folder inside --storage)"
            )
        if self.dense_m < 0:
            raise SteerfrontError(f"--dense-m must be 0 or more, not {self.dense_m}")
        if self.cache_gb is not None and not 0 < self.cache_gb < math.inf:
            raise SteerfrontError(
                f"--cache-gb must be a number of GB above 0, not {self.cache_gb:g}"
            )
        if not self.util_floor > 0:
            raise SteerfrontError(f"--util-floor must be above 0, not {self.util_floor}")
        self.front_objectives = axes.parse_objectives(self.front_objectives)
        self.max_kl = axes.check_max_kl(self.max_kl)
        if self.layer_prior not in LAYER_PRIORS:
            raise SteerfrontError(
                f"--layer-prior {self.layer_prior!r}: choose from {', '.join(LAYER_PRIORS)}"
            )
        if self.top_layers is not None and self.top_layers < 1:
            raise SteerfrontError(f"--layers top:{self.top_layers}: K must be at least 1")
        if self.top_layers is not None and self.layer_prior == "none":
            raise SteerfrontError(
                f"--layers top:{self.top_layers}: ranks layers by a prior; give --layer-prior "
                "navigator or lens"
            )
        if self.dtype not in DTYPES:
            raise SteerfrontError(f"--dtype {self.dtype!r}: choose from {', '.join(DTYPES)}")

    @functools.cached_property
    def store(self) -> Store:
        return Store(self.storage, self.name)

    @property
    def folder(self) -> Path:
        """The search's folder on this machine (a mirror, for an object store)."""
        return self.store.local

    @property
    def tracking(self) -> str:
        return tracking_uri(self.tracking_uri, self.storage)

    @property
    def resources(self) -> dict[str, float]:
        """A trial's, and those of the driver's model work (done in a worker like a trial)."""
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial}
