"""The log-odds evaluator against (a) the plain reference loop and (b) a plain batched scorer.

On the default model at layer L/2 with 9 values of m, for 100 pairs of the Psychopathy set
(../shared/datasets) and 100 pairs of the built-in free-text `sentiment` set, it times, side by
side in one run: (a) one pair, one completion, one m at a time through the full model; (b) every
pair, completion and m through the full model, batched; (c) steerfront's evaluator. It prints
both ratios and the largest difference in pref_odds / util_odds between (a) and (c), and the
two factors of the speed-up where matmuls dominate (a CPU): the ratio of weight multiply-adds
(a) / (c), and how much faster steerfront's fp32 linear kernel (the faster of oneDNN and ATen,
measured at load) runs than ATen's default (what (a) and (b) use) on this CPU.
The last line is JSON {"vs_reference", "vs_batched", "max_diff"} (the worse data set for each).
Targets: vs_reference >= 8, vs_batched >= 3, max_diff <= 1e-3.

    .venv/bin/python bench/scoring_speed.py [--pairs 100]
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from steerfront.data import PairSet, encode_pairs, load_concept, load_pairs
from steerfront.forward import shared_prompt_length
from steerfront.lm import fast_linear, linear_kernel
from steerfront.methods import diffmean
from steerfront.methods.interventions import Intervention
from steerfront.models import load_checked
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.logodds import LogOdds
from steerfront.scoring.reference import reference_nll

GRID = [-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0]
PSYCHOPATHY = (
    Path(__file__).resolve().parents[2] / "shared/datasets/anthropic-mwe/psychopathy.jsonl"
)


def reference_loop(lm, encoded, intervention) -> LogOdds:
    """(a): one pair, one completion, one m per forward."""
    l_p, l_n = [], []
    with intervention.attached(lm):
        for e in encoded:
            for m in GRID:
                intervention.m = m
                l_p.append(reference_nll(lm, e, True))
                l_n.append(reference_nll(lm, e, False))
    return _log_odds(encoded, l_p, l_n)


@torch.no_grad()
def plain_batched(lm, encoded, intervention, rows_per_batch: int = 32) -> LogOdds:
    """(b): every (pair, completion, m) a full-model row, batched and padded."""
    rows = [
        (i, positive, m) for i in range(len(encoded)) for m in GRID for positive in (True, False)
    ]
    nll = {}
    with intervention.attached(lm):
        for start in range(0, len(rows), rows_per_batch):
            chunk = rows[start : start + rows_per_batch]
            seqs = [
                encoded[i].prompt + (encoded[i].positive if p else encoded[i].negative)
                for i, p, _ in chunk
            ]
            width = max(map(len, seqs))
            ids = torch.zeros(len(seqs), width, dtype=torch.long)
            attention = torch.zeros(len(seqs), width, dtype=torch.long)
            for r, seq in enumerate(seqs):
                ids[r, : len(seq)], attention[r, : len(seq)] = torch.tensor(seq), 1
            intervention.m = torch.tensor([m for _, _, m in chunk])
            logits = lm.model(input_ids=ids, attention_mask=attention).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            for r, (i, p, m) in enumerate(chunk):
                start_tok, end = len(encoded[i].prompt), len(seqs[r])
                picked = logprobs[r, start_tok - 1 : end - 1].gather(1, ids[r, start_tok:end, None])
                nll[i, p, m] = -picked.sum().item()
    l_p = [nll[i, True, m] for i in range(len(encoded)) for m in GRID]
    l_n = [nll[i, False, m] for i in range(len(encoded)) for m in GRID]
    return _log_odds(encoded, l_p, l_n)


def ours(lm, encoded, intervention) -> LogOdds:
    """(c): steerfront's evaluator, the whole grid in one batched frozen-prefix pass."""
    return evaluate(lm, encoded, intervention, GRID)


def multiply_adds(lm, encoded, intervention) -> tuple[float, float]:
    """Weight multiply-adds of (a) and (c), counted from token counts and layer sizes.

    (a) runs prompt + completion through every layer and the head at every position, once per
    completion and m; (c) runs prompt + both completions (packed) through the layers below the
    intervention's `start` once, through the others once per m (the prompt tokens all pairs
    share once per m for the whole set), the last block's MLP and the head only at the scored
    positions; a completion's last token is never fed (nothing is scored after it).
    """
    block = sum(p.numel() for p in lm.layers[0].parameters())  # per token, per layer
    mlp = sum(p.numel() for p in lm.layers[-1].mlp.parameters())
    head = lm.model.get_output_embeddings().weight.numel()
    start, k, n = intervention.start, len(GRID), shared_prompt_length(encoded)
    ref, ours = 0.0, k * n * (lm.n_layers - start) * block
    for e in encoded:
        p, cp, cn = len(e.prompt), len(e.positive), len(e.negative)
        ref += k * (2 * p + cp + cn) * (lm.n_layers * block + head)
        packed, kept = p + cp + cn - 2, cp + cn - 1  # both completions start from p - 1
        suffix = (packed - n) * (lm.n_layers - start) * block - (packed - n - kept) * mlp
        ours += packed * start * block + k * (suffix + (cp + cn) * head)
    return ref, ours


def kernel_ratio(lm, tokens: int = 2048, repeats: int = 20) -> float:
    """Time of ATen's fp32 linear / steerfront's, on an MLP up-projection of `tokens` rows."""
    weight = lm.layers[0].mlp.up_proj.weight
    x = torch.randn(tokens, weight.shape[1])
    seconds = []
    for context in (nullcontext, fast_linear):
        with torch.no_grad(), context():
            torch.nn.functional.linear(x, weight)  # warm up
            started = time.perf_counter()
            for _ in range(repeats):
                torch.nn.functional.linear(x, weight)
        seconds.append(time.perf_counter() - started)
    return seconds[0] / seconds[1]


def _log_odds(encoded, l_p, l_n) -> LogOdds:
    n = len(encoded)
    return LogOdds(
        np.repeat(np.arange(n), len(GRID)), np.tile(GRID, n), np.array(l_p), np.array(l_n)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--psychopathy", default=str(PSYCHOPATHY))
    args = parser.parse_args()

    lm = load_checked(args.model)
    layer = lm.n_layers // 2
    sets = {
        "psychopathy": load_pairs(args.psychopathy),
        "sentiment": load_concept("sentiment"),
    }
    worst = {"vs_reference": float("inf"), "vs_batched": float("inf"), "max_diff": 0.0}
    print(f"model {lm.spec}, layer {layer}, {len(GRID)} values of m, diffmean vector")
    print(
        f"fp32 linear kernel, ATen / steerfront ({linear_kernel()}) on this CPU: "
        f"{kernel_ratio(lm):.1f}x"
    )
    for name, pairs in sets.items():
        test, train = pairs.pairs[: args.pairs], pairs.pairs[args.pairs :]  # diffmean from the rest
        vector = diffmean(lm, encode_pairs(lm.tokenizer, PairSet("t", train)))[layer]
        intervention = Intervention("vector", layer, {"v": vector})
        encoded = encode_pairs(lm.tokenizer, PairSet(name, test))
        seconds, results = {}, {}
        for label, run in (
            ("reference", reference_loop),
            ("batched", plain_batched),
            ("steerfront", ours),
        ):
            started = time.perf_counter()
            results[label] = run(lm, encoded, intervention)
            seconds[label] = time.perf_counter() - started
        ref, fast = results["reference"], results["steerfront"]
        diff = max(np.abs(ref.pref - fast.pref).max(), np.abs(ref.util - fast.util).max())
        vs_ref = seconds["reference"] / seconds["steerfront"]
        vs_batched = seconds["batched"] / seconds["steerfront"]
        ref_work, our_work = multiply_adds(lm, encoded, intervention)
        print(
            f"{name:<12} {len(encoded)} pairs: reference {seconds['reference']:.1f} s, "
            f"batched {seconds['batched']:.1f} s, steerfront {seconds['steerfront']:.1f} s; "
            f"vs_reference {vs_ref:.1f}x, vs_batched {vs_batched:.1f}x, max_diff {diff:.1e}; "
            f"multiply-adds reference / steerfront {ref_work / our_work:.1f}x "
            f"({shared_prompt_length(encoded)} shared prompt tokens)"
        )
        worst["vs_reference"] = min(worst["vs_reference"], round(vs_ref, 2))
        worst["vs_batched"] = min(worst["vs_batched"], round(vs_batched, 2))
        worst["max_diff"] = max(worst["max_diff"], float(diff))
    print(json.dumps(worst))


if __name__ == "__main__":
    main()
