"""m-sweeps: how preference, utility and the distance from the activation manifold move with m.

A sweep trains (or computes) one intervention, scores train and test pairs at every m of a grid
in one batched pass each, fits the paper's decay curves, and measures the steered activations
against the unsteered activation manifold.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from steerfront.data import EncodedPair, Splits, encode_pairs
from steerfront.errors import SteerfrontError
from steerfront.forward import PackedBatch, batch_tokens, frozen_prefix, pack
from steerfront.lm import LM, dtype_name
from steerfront.methods import Intervention, TrainSpec, fit
from steerfront.scoring.evaluate import check_grid, evaluate
from steerfront.scoring.fit import KINDS, FitReport, fit_report, grid_problem
from steerfront.scoring.manifold import Manifold, correlation, measure

# Fractions of the grid's reach; denser near 0, where preference is linear in m.
_GRID_SHAPE = (0.0, 0.03, 0.08, 0.15, 0.25, 0.4, 0.6, 0.8, 1.0)
# Reach of the default grid per form: twice the largest default training factor.
GRID_REACH = {"vector": 40.0, "lora": 4.0, "local_weight": 4.0}
DIFFMEAN_REACH = 16.0


def default_grid(spec: TrainSpec) -> list[float]:
    """Symmetric, denser near 0, out to where preference and utility have levelled off."""
    reach = DIFFMEAN_REACH if spec.objective.name == "diffmean" else GRID_REACH[spec.form]
    half = [round(reach * x, 4) for x in _GRID_SHAPE[1:]]
    return [-x for x in reversed(half)] + [0.0] + half


def sweep_grid(grid: list[float]) -> np.ndarray:
    """The grid sorted and without repeats (the per-m summary is sorted, and every result is
    paired with its m by position); two distinct m at least, to give the steering a direction."""
    unique = np.unique(check_grid(grid))
    if unique.size < 2:
        raise SteerfrontError(f"a sweep needs at least 2 distinct values of m, got {unique.size}")
    return unique


def fit_problem(grid: np.ndarray) -> str | None:
    """Why the decay fits cannot use this grid (None if they can)."""
    return next(filter(None, (grid_problem(grid, kind) for kind in KINDS)), None)


def run_sweep(
    lm: LM,
    splits: Splits,
    spec: TrainSpec,
    grid: list[float],
    progress: bool = False,
    fits: bool = True,
    end_of_turn: bool = False,
    per_token: bool = False,
    neutral_prompts: str | None = None,
) -> dict:
    """Train once, then score and measure train and test pairs at every m.

    Returns the per-pair table, the per-m summary (with manifold measures), the curve fits
    (None when `fits` is false) and the manifold's dimension. A grid the fits cannot use is
    refused before training. `end_of_turn` scores each completion with the turn's end,
    `per_token` by its mean NLL per token; both are recorded in every summary row. Every row
    also has kl from the unsteered model (`scoring.kl`) on `neutral_prompts` (a file; None:
    the built-in set), 0 at m = 0.
    """
    grid_array = sweep_grid(grid)
    problem = fit_problem(grid_array) if fits else None
    if problem:
        raise SteerfrontError(f"m-grid: {problem}")
    intervention = fit(lm, splits.train, spec, progress=progress)
    tables, summaries = [], {}
    for name, pairs in (("train", splits.train), ("test", splits.test)):
        encoded = encode_pairs(lm.tokenizer, pairs, end_of_turn=end_of_turn)
        scores = evaluate(lm, encoded, intervention, grid_array, per_token, progress=progress)
        tables.append(scores.table().append_column("split", pa.array([name] * len(scores.m))))
        summaries[name] = scores.summary().to_pylist()
    test_encoded = encode_pairs(lm.tokenizer, splits.test, end_of_turn=end_of_turn)
    manifold, rows = _manifold_rows(lm, test_encoded, intervention, grid_array)
    kl = _kl_rows(lm, intervention, grid_array, neutral_prompts)
    summary = []
    for train_row, test_row, geometry, distance in zip(
        summaries["train"], summaries["test"], rows, kl, strict=True
    ):
        summary.append(
            {
                "m": train_row["m"],
                **{f"train_{k}": v for k, v in train_row.items() if k != "m"},
                **{f"test_{k}": v for k, v in test_row.items() if k != "m"},
                **{k: v for k, v in geometry.items() if k != "m"},
                **distance,
                "end_of_turn": end_of_turn,  # how the completions were scored
                "per_token": per_token,
                "dtype": dtype_name(lm.dtype),  # the model's, which the scores carry
            }
        )
    at_zero = min(summary, key=lambda r: abs(r["m"]))["test_util_odds"]
    util_loss = [at_zero - r["test_util_odds"] for r in summary]
    return {
        "intervention": intervention,
        "pairs": pa.concat_tables(tables),
        "summary": pa.Table.from_pylist(summary),
        "fits": _fit_reports(summary) if fits else None,
        "manifold": {
            "k": manifold.k,
            "explained": manifold.explained,
            "points": manifold.points.shape[0],
            "reliable": manifold.reliable,
            "corr_off_manifold_util_loss": correlation(
                [r["off_manifold"] for r in summary], util_loss
            ),
        },
    }


def _kl_rows(
    lm: LM, intervention: Intervention, grid: np.ndarray, path: str | None
) -> list[dict[str, float]]:
    """kl and kl_first with their intervals at every m of `grid` (exactly 0 at m = 0)."""
    from steerfront.data.prompts import neutral_prompts
    from steerfront.defaults import KL_NEW_TOKENS, KL_PROMPTS, KL_TOKENS
    from steerfront.scoring.kl import kl_scores, unsteered_answers

    answers = unsteered_answers(lm, neutral_prompts(path, KL_PROMPTS), KL_NEW_TOKENS)
    steered = [float(m) for m in grid if m != 0.0]
    zero = dict.fromkeys(kl_scores(lm, None, 0.0, answers).metrics()[0.0], 0.0)
    scored = (
        kl_scores(lm, intervention, steered, answers, tokens=KL_TOKENS).metrics() if steered else {}
    )
    return [scored.get(float(m), zero) for m in grid]


def _fit_reports(summary: list[dict]) -> dict[str, FitReport]:
    m = np.array([r["m"] for r in summary])
    return {
        kind: fit_report(
            m,
            np.array([r[f"train_{column}"] for r in summary]),
            m,
            np.array([r[f"test_{column}"] for r in summary]),
            kind,
        )
        for kind, column in (("pref", "pref_odds"), ("util", "util_odds"))
    }


@torch.no_grad()
def prompt_activations(
    lm: LM, encoded: list[EncodedPair], intervention: Intervention, grid: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output of block `layer` at each prompt's last token: unsteered (N, d), steered (K, N, d).

    Only block `layer` runs, on the frozen prefix, with the whole grid as per-row m.
    """
    layer, k, d = intervention.layer, len(grid), lm.hidden_size
    m_rows = torch.tensor(grid, dtype=torch.float32, device=lm.device)
    unsteered = torch.zeros(len(encoded), d)
    steered = torch.zeros(k, len(encoded), d)
    batches = [b.to(lm.device) for b in pack(encoded, batch_tokens(lm, encoded, copies=k))]
    for batch, hidden in zip(batches, frozen_prefix(lm, batches, layer), strict=True):
        unsteered[batch.pairs.cpu()] = _last_prompt_state(lm, batch, hidden, layer)
        rows = batch.repeat(k)
        with intervention.attached(lm, m=m_rows.repeat(len(batch))):
            states = _last_prompt_state(lm, rows, hidden.repeat_interleave(k, 0), layer)
        steered[:, batch.pairs.cpu()] = states.view(len(batch), k, d).transpose(0, 1)
    return unsteered, steered


def _last_prompt_state(lm: LM, rows: PackedBatch, hidden: torch.Tensor, layer: int) -> torch.Tensor:
    out = lm.suffix(hidden, layer, rows.mask(lm.dtype), rows.position_ids, stop=layer + 1)
    return out[torch.arange(len(rows)), rows.pos_at[:, 0]].float().cpu()


def _manifold_rows(
    lm: LM, encoded: list[EncodedPair], intervention: Intervention, grid: np.ndarray
) -> tuple[Manifold, list[dict]]:
    unsteered, steered = prompt_activations(lm, encoded, intervention, grid)
    manifold = Manifold.fit(unsteered.cpu())
    direction = (steered[-1] - steered[0]).mean(0).cpu()  # the move from the lowest to highest m
    return manifold, measure(manifold, steered.cpu(), direction, grid.tolist())
