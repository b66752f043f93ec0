"""Search: space, Ray Tune trial, Optuna multi-objective, Pareto front, picking, MLflow."""
