"""A check at load that the fast path scores the model as the model's own forward does.

The evaluator bypasses the model's forward (a frozen prefix, packed rows with a tree mask, the
shared prompt's keys and values, the head only where scored): an architecture whose forward
does something more would be scored wrong without a word. Two probe pairs, rendered through
the model's chat template, are scored both ways (the first unsteered, the second steered by a
random intervention of each form at the middle layer) before the model is used; a model that
disagrees is refused.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig

from steerfront.batches import pad
from steerfront.data import EncodedPair, PairSet, PolarityPair, encode_pairs
from steerfront.errors import SteerfrontError
from steerfront.lm import LM, fast_linear
from steerfront.methods.interventions import Intervention, shapes
from steerfront.scoring.evaluate import evaluate

PROBES = PairSet(
    "self-check",
    (
        PolarityPair("Is the sky blue? Answer yes or no.", "Yes", "No"),
        PolarityPair("How was your morning?", "Calm, bright and slow.", "Rushed, grey and late."),
    ),
)
# Largest difference allowed in a completion's summed NLL (nats): a part for the completion and
# one per token. In 16 bits the two paths round differently; measured on the default model on
# a CPU, bf16 was off by up to 0.084 on a 1-token and 0.28 on a 7-token completion, fp16 by
# 0.003 and 0.060; the allowance is about twice that or more. fp32 is off by 1e-4.
TOLERANCE = {torch.float32: (1e-3, 0.0), torch.bfloat16: (0.2, 0.05), torch.float16: (0.01, 0.02)}
M = 2.0
RANK = 2  # the LoRA probe's


def self_check(lm: LM) -> float:
    """Raise a one-line `SteerfrontError` if the fast path and the model's own forward disagree
    on the probes; return the largest difference found (nats)."""
    encoded = encode_pairs(lm.tokenizer, PROBES)
    try:
        steered = _probe_interventions(lm, lm.n_layers // 2)
        fast = [evaluate(lm, encoded[:1], None, 0.0)]
        fast += [evaluate(lm, encoded[1:], intervention, M) for intervention in steered]
    except SteerfrontError:
        raise
    except Exception as exc:
        if not _layout_error(exc):  # out of memory, a torch function missing: not the layout
            raise
        why = (str(exc).strip().splitlines() or [""])[0]
        raise SteerfrontError(
            f"{lm.spec} fails the self-check: steerfront's fast path cannot run it "
            f"({type(exc).__name__}: {why})"
        ) from exc
    # The short answers unsteered (both completions predicted from one position), the free
    # text steered by each form (multi-token completions, the tree mask, steering in the
    # frozen prefix for a vector, inside the block for lora and local_weight).
    checks = [(0, "unsteered", 0.0, fast[0], 0)]
    for intervention, scores in zip(steered, fast[1:], strict=True):
        label = f"{intervention.form} at layer {intervention.layer}, m={M:g}"
        checks.append((1, label, M, scores, 0))
    # The model's own forward: the unsteered and vector rows in one batch (the vector at a
    # per-row m, 0 for the unsteered rows), each other form's rows in one of their own.
    both = (True, False)
    groups = [(steered[0], [(encoded[i], p, m) for i, _, m, _, _ in checks[:2] for p in both])]
    groups += [(iv, [(encoded[1], p, M) for p in both]) for iv in steered[1:]]
    expected = iter([nll for iv, rows in groups for nll in _stock_nll(lm, rows, iv)])
    worst = 0.0
    for i, what, _, scores, row in checks:
        for name, got, tokens in (
            ("L_p", float(scores.l_p[row]), len(encoded[i].positive)),
            ("L_n", float(scores.l_n[row]), len(encoded[i].negative)),
        ):
            want, tolerance = next(expected), _tolerance(lm.dtype, tokens)
            diff = abs(got - want)
            worst = max(worst, diff)
            if not diff <= tolerance:
                raise SteerfrontError(
                    f"{lm.spec} fails the self-check: on probe {i + 1} ({what}) steerfront's "
                    f"fast path gives {name} {got:.4f}, the model's own forward {want:.4f} (off "
                    f"by {diff:.2g}; tolerance {tolerance:.2g} for a {tokens}-token completion in "
                    f"{str(lm.dtype)[6:]})"
                )
    return worst


def _tolerance(dtype: torch.dtype, tokens: int) -> float:
    flat, per_token = TOLERANCE.get(dtype, TOLERANCE[torch.bfloat16])
    return flat + per_token * tokens


@torch.no_grad()
def _stock_nll(
    lm: LM, rows: list[tuple[EncodedPair, bool, float]], vector: Intervention
) -> list[float]:
    """Summed NLL of each row's completion by the model's own forward: every row its own
    `prompt + completion` sequence, right-padded into one batch, steered at its own m, logits
    kept (`logits_to_keep`) at the positions some row scores. Its linear layers run on the
    fast path's kernel (`fast_linear`): the check is about what the forward does, and that
    halves its time."""
    seqs = [e.prompt + (e.positive if positive else e.negative) for e, positive, _ in rows]
    ids, attention = pad(seqs)
    spans = [range(len(rows[r][0].prompt) - 1, len(seq) - 1) for r, seq in enumerate(seqs)]
    keep = sorted(set().union(*spans))
    m = torch.tensor([m for _, _, m in rows], device=lm.device)
    with vector.attached(lm, m=m), fast_linear():
        logits = lm.model(
            input_ids=ids.to(lm.device),
            attention_mask=attention.to(lm.device),
            use_cache=False,
            logits_to_keep=torch.tensor(keep, device=lm.device),
        ).logits.float()
    logprobs = torch.log_softmax(logits, dim=-1).cpu()
    return [
        -float(logprobs[r, [keep.index(t) for t in span], ids[r, [t + 1 for t in span]]].sum())
        for r, span in enumerate(spans)
    ]


def _probe_interventions(lm: LM, layer: int) -> list[Intervention]:
    """A random intervention of each form at `layer`, the same on every run: a vector of norm
    sqrt(d), then a LoRA (rank `RANK`) and a local weight whose tensors have entries of
    variance 1 / their last dimension (their change about the size of the block's own)."""
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(lm.hidden_size, generator=generator)
    v = v / v.norm() * lm.hidden_size**0.5
    probes = [Intervention("vector", layer, {"v": v.to(lm.device, lm.dtype)})]
    for form in ("lora", "local_weight"):
        params = {
            name: (torch.randn(shape, generator=generator) / shape[-1] ** 0.5).to(lm.device)
            for name, shape in shapes(form, lm, layer, RANK).items()
        }
        probes.append(Intervention(form, layer, params))
    return probes


def _layout_error(exc: Exception) -> bool:
    """Whether `exc` says that the model is laid out unlike the decoders the fast path runs: an
    attribute the model or its configuration lacks, or a block called or answering otherwise
    than expected (a TypeError, KeyError or IndexError). Anything else (out of memory, a torch
    function missing, a kernel failing) says nothing about the layout."""
    if isinstance(exc, AttributeError):
        ours = (nn.Module, PretrainedConfig)
        if getattr(exc, "obj", None) is not None:  # raised by attribute lookup itself
            return isinstance(exc.obj, ours)
        frame = exc.__traceback__
        while frame is not None and frame.tb_next is not None:
            frame = frame.tb_next
        # raised by hand, as nn.Module.__getattr__ does: whose method raised it
        return frame is not None and isinstance(frame.tb_frame.f_locals.get("self"), ours)
    return isinstance(exc, TypeError | KeyError | IndexError)
