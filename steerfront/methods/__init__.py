"""Interventions (vector, lora, local_weight) and the objectives that obtain them."""

from steerfront.methods.interventions import FORMS, Intervention, init_intervention
from steerfront.methods.objectives import OBJECTIVES, Objective, TrainSpec
from steerfront.methods.train import diffmean, fit, train

__all__ = [
    "FORMS",
    "OBJECTIVES",
    "Intervention",
    "Objective",
    "TrainSpec",
    "diffmean",
    "fit",
    "init_intervention",
    "train",
]
