"""Obtaining an intervention: DiffMean (train-free) or training with SFT, RePS or SPLIT.

Training rows come in pairs (reference code): an "add" row (winning = A_p, factor +a) and a
"sub" row (winning = A_n, factor -a), with `a` drawn per row and step from the training factors.
Only the intervention's parameters train; the model stays frozen.

What a training computes depends on its spec and data alone, never on the memory free when it
runs: a step's batch is `batch_size` pairs (length-sorted, in an order the seed shuffles), and
the free memory only decides into how many micro-batches that batch is cut. The loss is a
function of each row's summed log-probabilities, so a step cut into pieces accumulates exactly
the gradient of the whole batch's loss (up to fp32 round-off).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from steerfront.data import EncodedPair, PairSet, encode_pairs
from steerfront.defaults import TRAIN
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

    One pass yields every layer's vector: shape (n_layers, hidden_size). Each block's output is
    reduced to its per-pair difference as it comes out, so a batch keeps no more than one
    layer's activations (and an fp32 copy of its output) at a time.
    """
    total = torch.zeros(lm.n_layers, lm.hidden_size, dtype=torch.float32, device=lm.device)

    def add(index: int, _pairs: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> None:
        total[index] += (pos - neg).sum(0)

    _span_pass(lm, encoded, add)
    return total / len(encoded)


@torch.no_grad()
def span_means(lm: LM, encoded: list[EncodedPair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair's block outputs averaged over its positive and over its negative completion
    tokens, at every layer: two fp32 tensors (n_pairs, n_layers, hidden_size), in the order of
    `encoded`. The same single pass as `diffmean` (whose vectors are the mean over pairs of
    their difference), keeping each pair's means instead of their sum."""
    shape = (len(encoded), lm.n_layers, lm.hidden_size)
    pos = torch.zeros(shape, dtype=torch.float32, device=lm.device)
    neg = torch.zeros(shape, dtype=torch.float32, device=lm.device)

    def keep(index: int, pairs: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> None:
        pos[pairs, index] = p
        neg[pairs, index] = n

    _span_pass(lm, encoded, keep)
    return pos, neg


def _span_pass(
    lm: LM,
    encoded: list[EncodedPair],
    reduce: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None],
) -> None:
    """One forward pass over `encoded`; as block `i` outputs a batch, `reduce(i, pairs, pos,
    neg)` gets each row's output averaged over its positive and its negative completion tokens
    (fp32, (rows, hidden_size)) with the rows' indices into `encoded`."""
    spans: dict[str, torch.Tensor] = {}

    def grab(index: int) -> Callable:
        def hook(_module: torch.nn.Module, _args: tuple, output: object) -> None:
            acts = (output[0] if isinstance(output, tuple) else output).float()
            pos, neg = _span_mean(acts, spans["pos"]), _span_mean(acts, spans["neg"])
            reduce(index, spans["pairs"], pos, neg)

        return hook

    handles = [layer.register_forward_hook(grab(i)) for i, layer in enumerate(lm.layers)]
    # A layer's working activations, and the fp32 copy of its output the hook reduces.
    tokens = batch_tokens(lm, encoded, kept=4 * lm.hidden_size)
    try:
        for batch in pack(encoded, tokens, full_completions=True):
            batch = batch.to(lm.device)
            spans.update(pos=batch.pos_span, neg=batch.neg_span, pairs=batch.pairs)
            mask = batch.mask(lm.dtype)
            with lm.windows(mask, batch.position_ids):
                lm.model.model(
                    input_ids=batch.input_ids,
                    attention_mask=mask,
                    position_ids=batch.position_ids,
                    use_cache=False,
                )
    finally:
        for handle in handles:
            handle.remove()


def _span_mean(acts: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Per row, the mean of `acts` (B, T, d) over the positions `span` (B, 2) covers."""
    idx = torch.arange(acts.shape[1], device=acts.device)
    weights = ((idx[None] >= span[:, :1]) & (idx[None] < span[:, 1:])).to(acts.dtype)
    weights = weights / weights.sum(1, keepdim=True)
    return torch.einsum("btd,bt->bd", acts, weights)


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
            optimizer.zero_grad(set_to_none=True)
            loss = fitting.step(intervention, i, m)
            if not torch.isfinite(loss):
                raise SteerfrontError(
                    f"training stopped at step {step}: {spec.objective.name} loss is {loss.item()}"
                )
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
    length and, for RePS, the unsteered log-probabilities.

    `batches` are the logical batches, `spec.batch_size` pairs each whatever the memory; each
    is cut into `pieces` (micro-batches of whole pairs, trimmed to their own width) as many as
    the free memory holds at once, and the prefix and reference are kept per piece.
    """

    def __init__(
        self,
        lm: LM,
        encoded: list[EncodedPair],
        spec: TrainSpec,
        start: int,
        use_frozen_prefix: bool,
    ) -> None:
        self.lm, self.objective, self.start = lm, spec.objective, start
        batches = pack(encoded, sys.maxsize, max_rows=spec.batch_size)
        self.batches = [b.to(lm.device) for b in batches]
        tokens = micro_tokens(lm, encoded, start)
        self.pieces = [
            [(s, min(s + k, len(b))) for s in range(0, len(b), k)]
            for b in self.batches
            for k in [max(1, tokens // b.input_ids.shape[1])]
        ]
        self.parts = [
            [b.select(slice(*cut)) for cut in cuts]
            for b, cuts in zip(self.batches, self.pieces, strict=True)
        ]
        self.hidden = [
            frozen_prefix(lm, parts, start) if use_frozen_prefix else [None] * len(parts)
            for parts in self.parts
        ]
        self.shared = shared_prompt_length(encoded) if use_frozen_prefix else 0
        self.reference = (
            [
                _unsteered(lm, parts, h, start)
                for parts, h in zip(self.parts, self.hidden, strict=True)
            ]
            if self.objective.name == "reps"
            else None
        )

    def _piece_sums(
        self, intervention: Intervention, i: int, j: int, m: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row of piece `j` of batch `i` as add and sub rows at per-row strengths `m`:
        the summed log-probabilities of the positive and of the negative completion."""
        lm, start, n = self.lm, self.start, self.shared
        rows = self.parts[i][j].repeat(2)  # add row, then sub row, for every pair
        m = m.to(lm.device)
        h, shared = self.hidden[i][j], None
        if h is not None and n:  # the shared prompt tokens once per value of m
            values, which = m.unique(return_inverse=True)
            intervention.m = values
            s = intervention.enter(h[:1, :n].expand(len(values), n, -1))
            shared = SharedPrompt.run(lm, start, s).read_by(which)
        intervention.m = m
        if h is not None:
            h = intervention.enter(h[:, n:].repeat_interleave(2, dim=0))
        lp, ln = completion_logprobs(lm, rows, start, h, shared)
        return lp.sum(1), ln.sum(1)

    def _sums(self, intervention: Intervention, i: int, m: torch.Tensor) -> list[tuple]:
        """`_piece_sums` of every piece of batch `i` (rows `2a..2b` of `m` for pairs a..b)."""
        return [
            self._piece_sums(intervention, i, j, m[2 * a : 2 * b])
            for j, (a, b) in enumerate(self.pieces[i])
        ]

    def _objective(self, i: int, sums: list[tuple], m: torch.Tensor) -> torch.Tensor:
        """The objective on the whole of batch `i` from its pieces' per-row sums."""
        rows = self.batches[i].repeat(2)
        sum_pos = torch.cat([p for p, _ in sums])
        sum_neg = torch.cat([n for _, n in sums])
        ref = None
        if self.reference is not None:
            ref = torch.cat(self.reference[i]).repeat_interleave(2, dim=0)
        add = torch.arange(len(m), device=sum_pos.device) % 2 == 0
        n_pos, n_neg = rows.pos_valid.sum(1), rows.neg_valid.sum(1)
        return _loss(self.objective, n_pos, n_neg, sum_pos, sum_neg, add, ref)

    def loss(self, intervention: Intervention, i: int, m: torch.Tensor) -> torch.Tensor:
        """The objective on batch `i` as add and sub rows at per-row strengths `m` (every
        piece at once: for a value, under `torch.no_grad`)."""
        return self._objective(i, self._sums(intervention, i, m), m)

    def step(self, intervention: Intervention, i: int, m: torch.Tensor) -> torch.Tensor:
        """The objective on batch `i` (detached), its gradient added to the parameters'.

        A batch in one piece runs once. A batch in several first measures every row's sums
        without a graph; the whole batch's loss then gives each row's weight (d loss / d sum),
        and each piece runs again and adds the gradient of its rows' weighted sums: by the
        chain rule, the whole batch's gradient, whatever the cut.
        """
        if len(self.pieces[i]) == 1:
            loss = self.loss(intervention, i, m)
            loss.backward()
            return loss.detach()
        with torch.no_grad():
            sums = self._sums(intervention, i, m)
        leaves = [(p.clone().requires_grad_(True), n.clone().requires_grad_(True)) for p, n in sums]
        loss = self._objective(i, leaves, m)
        if not torch.isfinite(loss):
            return loss.detach()
        weights = torch.autograd.grad(loss, [t for pair in leaves for t in pair])
        for j, (a, b) in enumerate(self.pieces[i]):
            sum_pos, sum_neg = self._piece_sums(intervention, i, j, m[2 * a : 2 * b])
            w_pos, w_neg = weights[2 * j], weights[2 * j + 1]
            ((w_pos * sum_pos).sum() + (w_neg * sum_neg).sum()).backward()
        return loss.detach()


def micro_tokens(lm: LM, encoded: list[EncodedPair], start: int) -> int:
    """Padded tokens a training micro-batch may hold on `lm`'s device now: each pair an add
    and a sub row, kept for backward through layers `start..L-1` (`memory.tokens_per_batch`).
    It decides only how a step's batch is cut, never what the step computes."""
    return batch_tokens(lm, encoded, stored_layers=lm.n_layers - start, copies=2)


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
    n_pos: torch.Tensor,
    n_neg: torch.Tensor,
    sum_pos: torch.Tensor,
    sum_neg: torch.Tensor,
    add: torch.Tensor,
    reference: torch.Tensor | None,
) -> torch.Tensor:
    """SPLIT (SFT as its special case) or RePS on add/sub rows, from each row's completion
    lengths (`n_pos`, `n_neg`) and summed log-probabilities (`sum_pos`, `sum_neg`)."""
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
