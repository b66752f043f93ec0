"""The shared log-odds evaluator: every trial of every search is scored here.

Fast by construction: pairs packed so both completions share one prompt, batched by length
(each step trimmed to its rows' longest sequence); the prompt tokens all pairs share run once
per m; the frozen prefix below the first layer steering changes computed once per (pair set,
layer) and kept in a `MemoryCache`; a whole m-grid scored as per-row multipliers in one pass;
logits and the last block's MLP only at scored positions; fp32 linear layers through the
kernel measured fastest on this CPU (`lm.fast_linear`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from steerfront.data import EncodedPair
from steerfront.errors import SteerfrontError
from steerfront.forward import (
    PackedBatch,
    SharedPrompt,
    batch_tokens,
    completion_logprobs,
    frozen_prefix,
    pack,
    shared_prompt_length,
)
from steerfront.lm import LM
from steerfront.memory import MemoryCache
from steerfront.methods.interventions import Intervention, check_fits
from steerfront.scoring.logodds import LogOdds


def prefix(
    lm: LM, encoded: list[EncodedPair], layer: int, cache: MemoryCache, progress: bool = False
) -> tuple[list[PackedBatch], list[torch.Tensor]]:
    """Packed batches of `encoded` and their frozen prefix at `layer`, kept in `cache`."""
    key = ("prefix", id(lm.model), tuple(hash(e) for e in encoded), layer)

    def make() -> tuple[list[PackedBatch], list[torch.Tensor]]:
        batches = [b.to(lm.device) for b in pack(encoded, batch_tokens(lm, encoded))]
        return batches, frozen_prefix(lm, batches, layer, progress)

    return cache.get(key, make)


def check_grid(m: float | Sequence[float]) -> np.ndarray:
    """The m values as a float array; an empty grid or a non-finite value is refused."""
    grid = np.atleast_1d(np.asarray(m, dtype=np.float64))
    if grid.size == 0:
        raise SteerfrontError("the m-grid is empty (give at least one value of m)")
    bad = [float(x) for x in grid if not math.isfinite(x)]
    if bad:
        raise SteerfrontError(f"m must be finite, not {bad[0]}")
    return grid


@torch.no_grad()
def evaluate(
    lm: LM,
    encoded: list[EncodedPair],
    intervention: Intervention | None = None,
    m: float | Sequence[float] = 1.0,
    per_token: bool = False,
    cache: MemoryCache | None = None,
    progress: bool = False,
) -> LogOdds:
    """`L_p`, `L_n` of every pair at every `m` (rows ordered by pair, then m).

    Without an intervention the unsteered model is scored (m is then only a label).
    `per_token` divides each NLL by its completion's length (PAPER.md §3's variant). `cache`
    keeps the frozen prefix for later calls (without it, nothing is kept).
    """
    grid = check_grid(m)
    if not encoded:
        raise SteerfrontError("no pairs to score (the pair set is empty)")
    if intervention is not None:
        check_fits(intervention, lm)
    start = intervention.start if intervention is not None else 0
    cache = cache if cache is not None else MemoryCache(0)
    batches, hidden = prefix(lm, encoded, start, cache, progress)
    tokens = batch_tokens(lm, encoded)
    # Unsteered, every m gives the same scores: score once, then repeat.
    k = len(grid) if intervention is not None else 1
    l_p, l_n = np.zeros((len(encoded), k)), np.zeros((len(encoded), k))
    m_rows = torch.tensor(grid[:k], dtype=torch.float32, device=lm.device)
    shared = _shared_prompt(lm, encoded, start, hidden[0], intervention, m_rows)
    skip = shared.length if shared is not None else 0
    bar = tqdm(total=len(encoded), desc=f"scoring {len(grid)} values of m", disable=not progress)
    for batch, h in zip(batches, hidden, strict=True):
        bar.update(len(batch))
        step = max(1, tokens // (k * batch.input_ids.shape[1]))
        for first in range(0, len(batch), step):
            rows = batch.select(slice(first, first + step))
            lp, ln = _steered_logprobs(
                lm,
                rows.repeat(k),
                start,
                h[first : first + step, skip : rows.input_ids.shape[1]],
                intervention,
                m_rows,
                shared,
            )
            lp, ln = -lp.sum(1), -ln.sum(1)
            if per_token:
                lp = lp / rows.pos_valid.sum(1).repeat_interleave(k)
                ln = ln / rows.neg_valid.sum(1).repeat_interleave(k)
            pairs = rows.pairs.cpu().numpy()
            l_p[pairs] = lp.view(-1, k).cpu().double().numpy()
            l_n[pairs] = ln.view(-1, k).cpu().double().numpy()
    bar.close()
    repeat = len(grid) // k
    return LogOdds(
        pair=np.repeat(np.arange(len(encoded)), len(grid)),
        m=np.tile(grid, len(encoded)),
        l_p=np.repeat(l_p, repeat, axis=1).ravel(),
        l_n=np.repeat(l_n, repeat, axis=1).ravel(),
    )


def _shared_prompt(
    lm: LM,
    encoded: list[EncodedPair],
    start: int,
    hidden: torch.Tensor,
    intervention: Intervention | None,
    m_rows: torch.Tensor,
) -> SharedPrompt | None:
    """The prompt tokens all pairs share, run once per m (None if there are none); `hidden` is
    a batch's stream entering layer `start` (the same on those tokens in every row)."""
    n = shared_prompt_length(encoded)
    if n == 0:
        return None
    hidden = hidden[:1, :n].expand(len(m_rows), n, -1)
    if intervention is None:
        return SharedPrompt.run(lm, start, hidden)
    with intervention.attached(lm, m=m_rows):
        return SharedPrompt.run(lm, start, intervention.enter(hidden))


def _steered_logprobs(
    lm: LM,
    rows: PackedBatch,
    start: int,
    hidden: torch.Tensor,
    intervention: Intervention | None,
    m_rows: torch.Tensor,
    shared: SharedPrompt | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion log-probs for rows that repeat each pair once per value in `m_rows`;
    `hidden` is the stream entering layer `start` after the shared prompt tokens."""
    hidden = hidden.repeat_interleave(len(m_rows), dim=0)
    if shared is not None:
        shared = shared.read_by(torch.arange(len(rows), device=lm.device) % len(m_rows))
    if intervention is None:
        return completion_logprobs(lm, rows, start, hidden, shared)
    with intervention.attached(lm, m=m_rows.repeat(len(rows) // len(m_rows))):
        return completion_logprobs(lm, rows, start, intervention.enter(hidden), shared)
