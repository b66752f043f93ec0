"""Scoring: the log-odds evaluator, m-sweeps, decay-curve fits, manifold probes, plots."""
