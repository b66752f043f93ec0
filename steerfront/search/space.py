"""The search space: what a search may vary, validated in full before anything starts.

A value given as a list is a set of choices, `[low, high]` for a float is a range, and a scalar
is fixed. `m` may differ per form (vector strengths are larger than weight-update strengths).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from steerfront.defaults import FORMS, OBJECTIVES, PRIORS, SEARCH_SPACE
from steerfront.errors import SteerfrontError

FloatRange = tuple[float, float]


class SearchSpace(BaseModel):
    """Forms, objectives, layers, strengths and hyperparameters a search samples from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    forms: list[str] = list(SEARCH_SPACE["forms"])
    objectives: list[str] = list(SEARCH_SPACE["objectives"])
    layers: list[int] | None = None  # None: every third layer of the model's middle half
    m: dict[str, FloatRange] = dict(SEARCH_SPACE["m"])
    rank: list[int] = list(SEARCH_SPACE["rank"])
    gamma: float | FloatRange = SEARCH_SPACE["gamma"]
    lambda_n: float | FloatRange = SEARCH_SPACE["lambda_n"]
    theta: float | FloatRange = SEARCH_SPACE["theta"]
    lr: float | FloatRange | None = None  # None: the form's default learning rate
    steps: list[int] = list(SEARCH_SPACE["steps"])
    factors: list[float] | None = None  # None: the form's default training factors

    @field_validator("forms")
    @classmethod
    def _forms(cls, value: list[str]) -> list[str]:
        return _choices(value, FORMS, "form")

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        return _choices(value, OBJECTIVES, "objective")

    @field_validator("m", mode="before")
    @classmethod
    def _m(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):  # one range for every form
            return {form: value for form in FORMS}
        return value

    @field_validator("rank", "steps", "layers")
    @classmethod
    def _positive_ints(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not value:
            raise ValueError("must not be empty")
        if value is not None and min(value) < 0:
            raise ValueError(f"values must not be negative, not {min(value)}")
        return value

    @field_validator("gamma", "lambda_n", "theta", "lr")
    @classmethod
    def _range(cls, value: float | FloatRange | None) -> float | FloatRange | None:
        if isinstance(value, tuple) and not value[0] <= value[1]:
            raise ValueError(f"range is empty: low {value[0]} > high {value[1]}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpace:
        for form in self.forms:
            if form not in self.m:
                raise ValueError(f"m: no range for form {form!r}")
            low, high = self.m[form]
            if not low <= high:
                raise ValueError(f"m: range for {form} is empty: low {low} > high {high}")
        if self.objectives == ["diffmean"] and self.forms != ["vector"]:
            raise ValueError("objectives: diffmean alone can produce only the vector form")
        if min(self.rank) < 1:
            raise ValueError("rank: values must be at least 1")
        if min(self.steps) < 1:
            raise ValueError("steps: values must be at least 1")
        if self.factors is not None and not self.factors:
            raise ValueError("factors: must not be empty")
        return self

    def check_model(self, n_layers: int, max_rank: int) -> list[int]:
        """Layers to search for a model with `n_layers` layers; refuse what it cannot have."""
        layers = self.layers or default_layers(n_layers)
        bad = [layer for layer in layers if not 0 <= layer < n_layers]
        if bad:
            raise SteerfrontError(
                f"search space: layers {bad} are outside the model (layers 0..{n_layers - 1})"
            )
        if "lora" in self.forms and max(self.rank) > max_rank:
            raise SteerfrontError(
                f"search space: rank {max(self.rank)} is larger than the down-projection "
                f"allows ({max_rank})"
            )
        return layers

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def default_layers(n_layers: int) -> list[int]:
    """Every third layer across the middle half, where steering tends to work best."""
    return list(range(n_layers // 4, (3 * n_layers) // 4 + 1, 3)) or [n_layers // 2]


def layer_weights(scores: Sequence[float], floor: float = PRIORS["floor"]) -> np.ndarray:
    """The share of the sampler's layer choice each layer gets from its prior `scores`.

    `(1 - floor) · softmax(z) + floor / n`, with `z` the scores standardised over the layers.
    Standardised, because the priors share no scale (the navigator lies in [-1, 2], the lens
    in vocabulary standard deviations) and only how far a layer stands out among the searched
    ones should matter; softmax rather than ranks, because ranks would give a clear leader
    and a near tie the same room (with z from -1.5 to 1.5 the best layer gets about 20 times
    the worst's softmax share). The floor keeps every layer at least `floor` of its even share:
    the prior is a guess made before any training, and the sampler must be able to overrule
    it. Equal scores (or one layer) give every layer the same share; a non-finite score
    counts as the lowest finite one.
    """
    x = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(x)
    x = np.where(finite, x, x[finite].min() if finite.any() else 0.0)
    spread = x.std()
    z = (x - x.mean()) / spread if spread > 0 else np.zeros_like(x)
    soft = np.exp(z - z.max())
    return (1 - floor) * soft / soft.sum() + floor / len(x)


def top_layers(layers: Sequence[int], scores: Sequence[float], k: int) -> list[int]:
    """The `k` layers with the highest scores, best first (ties: the lower layer)."""
    order = sorted(range(len(layers)), key=lambda j: (-_finite(scores[j]), layers[j]))
    return [layers[j] for j in order[:k]]


def check_top(top: int, layers: Sequence[int]) -> None:
    """Refuse `--layers top:K` with K above the number of layers the space searches."""
    if top > len(layers):
        count = f"{len(layers)} layer{'s' if len(layers) != 1 else ''}"
        raise SteerfrontError(f"--layers top:{top}: the space has only {count} ({list(layers)})")


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


@dataclass(frozen=True)
class Sampler:
    """Optuna's define-by-run space (a picklable callable: Tune checkpoints its searcher).

    Conditional choices get names of their own (`objective_lora`, `m_vector`, ...), so every
    name keeps one fixed distribution.

    With a layer `prior` (a score per layer of `layers`), the layer comes from a float
    `layer_q` in [0, 1] through the prior-weighted CDF over `layers` (`layer_weights`): each
    layer owns an interval as wide as its weight, so random draws and TPE's model of the good
    region (a density over `layer_q`) both start with the good layers taking more room, and
    neighbouring intervals are neighbouring layers. Without one, the layer is a categorical
    choice, as it always was.
    """

    space: SearchSpace
    layers: list[int]
    prior: tuple[float, ...] | None = None

    def __call__(self, trial: Any) -> dict:
        space = self.space
        form = trial.suggest_categorical("form", space.forms)
        objectives = [o for o in space.objectives if form == "vector" or o != "diffmean"]
        config = {
            "form": form,
            "objective": _pick(trial, f"objective_{form}", objectives),
            "layer": self._layer(trial),
            "m": _pick(trial, f"m_{form}", space.m[form]),
        }
        if form == "lora":
            config["rank"] = _pick(trial, "rank", space.rank)
        if config["objective"] == "split":
            for name in ("gamma", "lambda_n", "theta"):
                config[name] = _pick(trial, name, getattr(space, name))
        if config["objective"] != "diffmean":
            config["steps"] = _pick(trial, "steps", space.steps)
            if space.lr is not None:
                config["lr"] = _pick(trial, f"lr_{form}", space.lr, log=True)
            if space.factors is not None:
                config["factors"] = space.factors
        return config

    def first_points(self) -> list[dict]:
        """The first trials: one per form, then one for each objective not yet tried, so a
        short search tries every form (and objective) before the sampler takes over; with a
        layer prior, at the prior's best layers (`PRIORS["top"]`), best first, in turn.
        Partial points: Optuna samples the rest."""
        forms, objectives = self.space.forms, self.space.objectives
        pairs: list[tuple[str, str]] = []
        for form in forms:
            valid = [o for o in objectives if form == "vector" or o != "diffmean"]
            tried = {o for _, o in pairs}
            pairs.append((form, next((o for o in valid if o not in tried), valid[0])))
        for objective in objectives:
            if objective not in {o for _, o in pairs}:
                form = "vector" if objective == "diffmean" else forms[len(pairs) % len(forms)]
                if form in forms:
                    pairs.append((form, objective))
        points = [{"form": form, f"objective_{form}": objective} for form, objective in pairs]
        if self.prior is not None and len(self.layers) > 1:  # the prior's best layers, in turn
            best = top_layers(self.layers, self.prior, PRIORS["top"])
            for j, point in enumerate(points):
                point["layer_q"] = self.layer_q(best[j % len(best)])
        return points

    def _layer(self, trial: Any) -> int:
        if self.prior is None or len(self.layers) == 1:
            return _pick(trial, "layer", self.layers)
        edges = np.cumsum(layer_weights(self.prior))
        q = trial.suggest_float("layer_q", 0.0, 1.0)
        return self.layers[min(int(np.searchsorted(edges, q, side="right")), len(edges) - 1)]

    def layer_q(self, layer: int) -> float:
        """The middle of `layer`'s interval of `layer_q` (where a first trial puts it)."""
        edges = np.concatenate([[0.0], np.cumsum(layer_weights(self.prior))])
        j = self.layers.index(layer)
        return float((edges[j] + edges[j + 1]) / 2)


def _pick(trial: Any, name: str, values: Any, log: bool = False) -> Any:
    """Sample a choice from a list, a float from a `(low, high)` range; a scalar is fixed."""
    if isinstance(values, list):
        return values[0] if len(values) == 1 else trial.suggest_categorical(name, values)
    if isinstance(values, tuple):
        low, high = values
        return low if low == high else trial.suggest_float(name, low, high, log=log)
    return values


def _choices(value: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    if not value:
        raise ValueError("must not be empty")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown[0]!r} (choose from {', '.join(allowed)})")
    return value


def load_space(path: str | Path | None, overrides: dict | None = None) -> SearchSpace:
    """A space from a YAML file (or the defaults), with flag overrides; one-line errors."""
    data: dict = {}
    where = str(path) if path else "search space"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SteerfrontError(f"{path}: no such file")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise SteerfrontError(
                f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})"
            ) from None
        if not isinstance(data, dict):
            raise SteerfrontError(f"{path}: expected a mapping of search-space keys")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return SearchSpace(**data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "space"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        raise SteerfrontError(f"{where}: {field}: {message}") from None
