"""How an intervention is obtained: the objective and the training recipe (PAPER.md §6)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from steerfront.defaults import FACTORS, FORMS, LEARNING_RATE, OBJECTIVES, SPLIT, TRAIN
from steerfront.errors import SteerfrontError


@dataclass(frozen=True)
class Objective:
    """An objective with its hyperparameters. SFT is SPLIT with `lambda_n = 0, gamma = 0`."""

    name: str = "split"
    lambda_p: float = SPLIT["lambda_p"]
    lambda_n: float = SPLIT["lambda_n"]
    gamma: float = SPLIT["gamma"]
    theta: float = SPLIT["theta"]

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise SteerfrontError(
                f"unknown objective {self.name!r} (choose from {', '.join(OBJECTIVES)})"
            )
        if self.name == "sft":
            object.__setattr__(self, "lambda_n", 0.0)
            object.__setattr__(self, "gamma", 0.0)

    @property
    def trains(self) -> bool:
        return self.name != "diffmean"

    def hyperparameters(self) -> dict:
        if self.name in ("split", "sft"):
            return {
                "lambda_p": self.lambda_p,
                "lambda_n": self.lambda_n,
                "gamma": self.gamma,
                "theta": self.theta,
            }
        return {}


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a trained intervention (the train key, with the data)."""

    form: str
    layer: int
    objective: Objective = field(default_factory=Objective)
    rank: int = TRAIN["rank"]
    lr: float | None = None  # None: LEARNING_RATE[form]
    steps: int = TRAIN["steps"]  # optimizer steps, at most
    patience: int = TRAIN["patience"]  # held-out checks without improvement; 0: no early stop
    batch_size: int = TRAIN["batch_size"]
    factors: tuple[float, ...] | None = None  # None: FACTORS[form]
    seed: int = TRAIN["seed"]

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise SteerfrontError(f"unknown form {self.form!r} (choose from {', '.join(FORMS)})")
        if self.objective.name == "diffmean" and self.form != "vector":
            raise SteerfrontError(
                f"objective diffmean cannot produce a {self.form} intervention (vector only)"
            )
        if self.factors is not None and not self.factors:
            raise SteerfrontError("training factors are empty (give at least one value)")
        if self.factors is not None and not all(math.isfinite(a) for a in self.factors):
            raise SteerfrontError(f"training factors must be finite, not {list(self.factors)}")
        if self.steps < 1 or self.batch_size < 1:
            raise SteerfrontError(
                f"steps ({self.steps}) and batch_size ({self.batch_size}) must be at least 1"
            )
        if self.patience < 0:
            raise SteerfrontError(f"patience must be 0 or more, not {self.patience}")
        if self.lr is not None and not self.lr > 0:
            raise SteerfrontError(f"learning rate must be positive, not {self.lr}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else LEARNING_RATE[self.form]

    @property
    def training_factors(self) -> tuple[float, ...]:
        return self.factors if self.factors is not None else FACTORS[self.form]

    def describe(self) -> dict:
        """Flat, JSON-ready description (sidecars, MLflow params)."""
        return {
            "form": self.form,
            "layer": self.layer,
            "objective": self.objective.name,
            **self.objective.hyperparameters(),
            **({"rank": self.rank} if self.form == "lora" else {}),
            **(
                {
                    "lr": self.learning_rate,
                    "steps": self.steps,
                    "patience": self.patience,
                    "batch_size": self.batch_size,
                    "factors": list(self.training_factors),
                    "seed": self.seed,
                }
                if self.objective.trains
                else {}
            ),
        }
