"""Interventions (vector, lora, local_weight) and the objectives that obtain them."""

from steerfront.defaults import FORMS, OBJECTIVES
from steerfront.methods.interventions import Intervention, init_intervention
from steerfront.methods.objectives import Objective, TrainSpec
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
