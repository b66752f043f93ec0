"""Obtaining an intervention: DiffMean (train-free) or training with SFT, RePS or SPLIT.

Training rows come in pairs (reference code): an "add" row (winning = A_p, factor +a) and a
"sub" row (winning = A_n, factor -a), with `a` drawn per row and step from the training factors.
Only the intervention's parameters train; the model stays frozen.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from steerfront.data import EncodedPair, PairSet, encode_pairs
from steerfront.defaults import TRAIN
from steerfront.errors import SteerfrontError
from steerfront.forward import (
    PackedBatch,
    SharedPrompt,
    completion_logprobs,
    frozen_prefix,
    pack,
    shared_prompt_length,
)
from steerfront.lm import LM
from steerfront.methods.interventions import Intervention, init_intervention, shapes
from steerfront.methods.objectives import Objective, TrainSpec


def fit(lm: LM, pairs: PairSet, spec: TrainSpec, progress: bool = False) -> Intervention:
    """The intervention `spec` describes, obtained from `pairs` (the training split).

    With early stopping on (`spec.patience`), a share of the pairs (`TRAIN["holdout"]`, whole
    prompts) is held out of training to measure the loss on.
    """
    shapes(spec.form, lm, spec.layer, spec.rank)  # refuse an impossible layer or rank up front
    meta = {**spec.describe(), "model": lm.spec, "dataset": pairs.fingerprint}
    if not spec.objective.trains:
        vector = diffmean(lm, encode_pairs(lm.tokenizer, pairs))[spec.layer]
        return Intervention("vector", spec.layer, {"v": vector}, meta=meta)
    holdout = None
    if spec.patience:
        parts = pairs.split(val_fraction=TRAIN["holdout"], test_fraction=0.0, seed=spec.seed)
        if len(parts.val) and len(parts.train):
            pairs, holdout = parts.train, encode_pairs(lm.tokenizer, parts.val)
    encoded = encode_pairs(lm.tokenizer, pairs)
    return train(lm, encoded, spec, meta=meta, holdout=holdout, progress=progress)


@torch.no_grad()
def diffmean(lm: LM, encoded: list[EncodedPair]) -> torch.Tensor:
    """Mean over pairs of (positive - negative) block outputs, averaged over completion tokens.

    One pass yields every layer's vector: shape (n_layers, hidden_size).
    """
    outputs: list[torch.Tensor] = []

    def grab(_module: torch.nn.Module, _args: tuple, output: object) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(grab) for layer in lm.layers]
    total = torch.zeros(lm.n_layers, lm.hidden_size, dtype=torch.float32, device=lm.device)
    try:
        for batch in pack(encoded, full_completions=True):
            batch = batch.to(lm.device)
            outputs.clear()
            mask = batch.mask(lm.dtype)
            with lm.windows(mask, batch.position_ids):
                lm.model.model(
                    input_ids=batch.input_ids,
                    attention_mask=mask,
                    position_ids=batch.position_ids,
                    use_cache=False,
                )
            acts = torch.stack(outputs).float()  # (layers, B, T, d)
            total += (_span_mean(acts, batch.pos_span) - _span_mean(acts, batch.neg_span)).sum(1)
    finally:
        for handle in handles:
            handle.remove()
    return total / len(encoded)


def _span_mean(acts: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    idx = torch.arange(acts.shape[2], device=acts.device)
    weights = ((idx[None] >= span[:, :1]) & (idx[None] < span[:, 1:])).to(acts.dtype)
    weights = weights / weights.sum(1, keepdim=True)
    return torch.einsum("lbtd,bt->lbd", acts, weights)


def train(
    lm: LM,
    encoded: list[EncodedPair],
    spec: TrainSpec,
    meta: dict | None = None,
    holdout: list[EncodedPair] | None = None,
    use_frozen_prefix: bool = True,
    progress: bool = False,
) -> Intervention:
    """Train for `spec.steps` optimizer steps (batches in a fresh seeded order each pass) with
    AdamW, linear decay without warm-up and gradient clipping at 1.0.

    With `holdout` pairs, their loss is measured every `TRAIN["check_every"]` steps (at fixed
    training factors, so checks compare); training stops once `spec.patience` checks bring no
    improvement, and the best parameters seen are kept. The sidecar records `steps_run`,
    `best_step` and `holdout_loss`. `use_frozen_prefix=False` runs the whole model every step
    (the plain way, for comparison); both ways compute the same thing.
    """
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    intervention = init_intervention(spec.form, lm, spec.layer, spec.rank, spec.seed, meta)
    start = intervention.start if use_frozen_prefix else 0
    factors = torch.tensor(spec.training_factors, dtype=torch.float32)
    fitting = _Rows(lm, encoded, spec, start, use_frozen_prefix)
    checking = _Rows(lm, holdout, spec, start, use_frozen_prefix) if holdout else None
    held_m = None
    if checking is not None:  # one fixed draw of factors: checks differ only by the parameters
        draw = torch.Generator().manual_seed(spec.seed + 1)
        held_m = [_draw(len(b), factors, draw) for b in checking.batches]
    params = intervention.parameters()
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / spec.steps)
    bar = tqdm(
        total=spec.steps, desc=f"training {spec.form} {spec.objective.name}", disable=not progress
    )
    best, best_step, best_state, stale, order = math.inf, 0, None, 0, []
    with intervention.attached(lm):
        for step in range(1, spec.steps + 1):
            if not order:
                order = torch.randperm(len(fitting.batches), generator=generator).tolist()
            i = order.pop(0)
            m = _draw(len(fitting.batches[i]), factors, generator)
            loss = fitting.loss(intervention, i, m)
            if not torch.isfinite(loss):
                raise SteerfrontError(
                    f"training stopped at step {step}: {spec.objective.name} loss is {loss.item()}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if checking is None or (step % TRAIN["check_every"] and step < spec.steps):
                continue
            with torch.no_grad():
                held = sum(checking.loss(intervention, j, m).item() for j, m in enumerate(held_m))
            if held < best:
                best, best_step, stale = held, step, 0
                best_state = [p.detach().clone() for p in params]
            else:
                stale += 1
                if stale >= spec.patience:
                    break
    bar.close()
    if best_state is not None:
        with torch.no_grad():
            for p, kept in zip(params, best_state, strict=True):
                p.copy_(kept)
    for p in params:
        p.requires_grad_(False)
    intervention.m = 1.0
    intervention.meta.update(steps_run=step, best_step=best_step or step)
    if checking is not None:
        intervention.meta["holdout_loss"] = best / len(held_m)
    return intervention


def _draw(pairs: int, factors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-row m for a step on `pairs` pairs: an add row (+a) then a sub row (-a) per pair."""
    a = factors[torch.randint(len(factors), (2 * pairs,), generator=generator)]
    return torch.tensor([1.0, -1.0]).repeat(pairs) * a


class _Rows:
    """Training batches with what their loss needs: the frozen prefix, the shared prompt
    length and, for RePS, the unsteered log-probabilities."""

    def __init__(
        self,
        lm: LM,
        encoded: list[EncodedPair],
        spec: TrainSpec,
        start: int,
        use_frozen_prefix: bool,
    ) -> None:
        self.lm, self.objective, self.start = lm, spec.objective, start
        self.batches = [b.to(lm.device) for b in pack(encoded, max_rows=spec.batch_size)]
        self.hidden = (
            frozen_prefix(lm, self.batches, start)
            if use_frozen_prefix
            else [None] * len(self.batches)
        )
        self.shared = shared_prompt_length(encoded) if use_frozen_prefix else 0
        self.reference = (
            _unsteered(lm, self.batches, self.hidden, start)
            if self.objective.name == "reps"
            else None
        )

    def loss(self, intervention: Intervention, i: int, m: torch.Tensor) -> torch.Tensor:
        """The objective on batch `i` as add and sub rows at per-row strengths `m`."""
        lm, start, n = self.lm, self.start, self.shared
        rows = self.batches[i].repeat(2)  # add row, then sub row, for every pair
        m = m.to(lm.device)
        h, shared = self.hidden[i], None
        if h is not None and n:  # the shared prompt tokens once per value of m
            values, which = m.unique(return_inverse=True)
            intervention.m = values
            s = intervention.enter(h[:1, :n].expand(len(values), n, -1))
            shared = SharedPrompt.run(lm, start, s).read_by(which)
        intervention.m = m
        if h is not None:
            h = intervention.enter(h[:, n:].repeat_interleave(2, dim=0))
        lp, ln = completion_logprobs(lm, rows, start, h, shared)
        ref = None if self.reference is None else self.reference[i].repeat_interleave(2, dim=0)
        add = torch.arange(len(m), device=m.device) % 2 == 0
        return _loss(self.objective, rows, lp, ln, add, ref)


@torch.no_grad()
def _unsteered(lm: LM, batches: list[PackedBatch], hidden: list, start: int) -> list[torch.Tensor]:
    """Per pair (sum log P(A_p), sum log P(A_n)) under the unsteered model, for RePS."""
    out = []
    for batch, h in zip(batches, hidden, strict=True):
        lp, ln = completion_logprobs(lm, batch, start, h)
        out.append(torch.stack([lp.sum(1), ln.sum(1)], dim=1))
    return out


def _loss(
    objective: Objective,
    rows: PackedBatch,
    lp: torch.Tensor,
    ln: torch.Tensor,
    add: torch.Tensor,
    reference: torch.Tensor | None,
) -> torch.Tensor:
    """SPLIT (SFT as its special case) or RePS on add/sub rows."""
    n_pos, n_neg = rows.pos_valid.sum(1), rows.neg_valid.sum(1)
    sum_pos, sum_neg = lp.sum(1), ln.sum(1)
    sum_w = torch.where(add, sum_pos, sum_neg)
    sum_l = torch.where(add, sum_neg, sum_pos)
    len_w = torch.where(add, n_pos, n_neg)
    len_l = torch.where(add, n_neg, n_pos)
    if objective.name == "reps":
        r_w = torch.where(add, reference[:, 0], reference[:, 1])
        r_l = torch.where(add, reference[:, 1], reference[:, 0])
        beta = torch.clamp(r_l - r_w, min=1.0)
        return -F.logsigmoid(beta * sum_w / len_w - sum_l / len_l).mean()
    # Token-mean cross-entropy over the batch (reference code), then the preference hinge.
    ce_w = -sum_w.sum() / len_w.sum()
    ce_l = -sum_l.sum() / len_l.sum()
    return (
        objective.lambda_p * ce_w
        + objective.lambda_n * ce_l
        + objective.gamma * F.relu(objective.theta - (ce_l - ce_w))
    )
