"""What `kl` adds to a trial's scoring time, measured side by side in one run.

On the default model, per concept: a DiffMean vector at layer L/2 (trained on the concept's
training split), scored as `search/trial.py` scores a trial: the evaluator on the validation
pairs at the trial's m and `dense_m` more values (`dense_grid`), and on the test pairs at m;
then `kl_scores` at the same validation values on the neutral answers. Each is timed cold (the
first trial at a layer: frozen prefixes computed) and warm (a later trial at that layer: a
worker's cache holds them; the best of `--repeats`). The unsteered answers are generated once
(timed apart: once per model and prompt set, then read from the cache folder).
Variants: the trial's m or its whole grid; the first `--tokens` answer tokens (the default,
`KL_TOKENS`), all of them, or the first only. Target: warm kl at the trial's m (the default)
/ warm trial scoring <= 0.25. The last line is JSON.

    .venv/bin/python bench/kl_cost.py [--concepts agreeableness sentiment] [--tokens N]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from steerfront.data import encode_pairs, load_concept
from steerfront.data.prompts import neutral_prompts
from steerfront.defaults import KL_NEW_TOKENS, KL_PROMPTS, KL_TOKENS, SEARCH, SEARCH_SPACE
from steerfront.lm import _cpu_name, linear_kernel, load_model
from steerfront.memory import MemoryCache
from steerfront.methods import diffmean
from steerfront.methods.interventions import Intervention
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.kl import kl_scores, unsteered_answers
from steerfront.search.trial import dense_grid

M = 8.0  # the trial's own m (vector range 0..20)


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concepts", nargs="+", default=["agreeableness", "sentiment"])
    parser.add_argument("--prompts", type=int, default=KL_PROMPTS)
    parser.add_argument("--new-tokens", type=int, default=KL_NEW_TOKENS)
    parser.add_argument("--tokens", type=int, default=KL_TOKENS, help="answer tokens scored")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    lm = load_model(args.model)
    layer = lm.n_layers // 2
    prompts = neutral_prompts(count=args.prompts)
    gen_s, answers = timed(lambda: unsteered_answers(lm, prompts, args.new_tokens))
    lengths = [len(a) for a in answers.answer_ids]
    low, high = SEARCH_SPACE["m"]["vector"]
    grid = [M, *dense_grid(M, low, high, SEARCH["dense_m"])]
    print(f"cpu: {_cpu_name()}; fp32 linear kernel {linear_kernel()}")
    print(
        f"model {lm.spec}, vector at layer {layer}, val grid of {len(grid)} values of m, "
        f"test at m={M:g}; kl on {len(answers)} neutral prompts, answers of "
        f"{min(lengths)}..{max(lengths)} tokens (mean {np.mean(lengths):.1f}); unsteered "
        f"answers: {gen_s:.1f} s "
        f"(generated or read from the cache)"
    )
    variants = {  # name: (values of m, answer tokens scored)
        f"kl at the trial's m, {args.tokens} tokens": ([M], args.tokens),
        "kl at the trial's m, all tokens": ([M], None),
        "kl_first at the trial's m": ([M], 1),
        f"kl at every m, {args.tokens} tokens": (grid, args.tokens),
        "kl_first at every m": (grid, 1),
    }
    chosen = next(iter(variants))
    worst = 0.0
    for concept in args.concepts:
        splits = load_concept(concept).split(SEARCH["val_fraction"], SEARCH["test_fraction"], 0)
        val, test = (encode_pairs(lm.tokenizer, s) for s in (splits.val, splits.test))
        vector = diffmean(lm, encode_pairs(lm.tokenizer, splits.train))[layer]
        intervention = Intervention("vector", layer, {"v": vector})
        cache = MemoryCache(1 << 31)

        def trial(cache=cache, val=val, test=test, intervention=intervention):
            evaluate(lm, val, intervention, grid, cache=cache)
            evaluate(lm, test, intervention, [M], cache=cache)

        trial_cold, _ = timed(trial)
        trial_warm = min(timed(trial)[0] for _ in range(args.repeats))
        print(
            f"{concept}: {len(val)}+{len(test)} pairs; trial scoring {trial_warm:.2f} s warm "
            f"({trial_cold:.2f} s cold)"
        )
        for name, (ms, tokens) in variants.items():

            def kl(cache=cache, intervention=intervention, ms=ms, tokens=tokens):
                return kl_scores(lm, intervention, ms, answers, cache, tokens=tokens)

            kl_cold, scores = timed(kl)
            kl_warm = min(timed(kl)[0] for _ in range(args.repeats))
            ratio = kl_warm / trial_warm
            if name == chosen:
                worst = max(worst, ratio)
            point = scores.metrics()[M]
            print(
                f"  {name:<34} {kl_warm:5.2f} s warm ({kl_cold:5.2f} s cold): "
                f"kl / trial {ratio:.2f} warm, {kl_cold / trial_cold:.2f} cold; at m={M:g} "
                f"kl {point['kl']:.3f} [{point['kl_lo']:.3f}, {point['kl_hi']:.3f}], "
                f"kl_first {point['kl_first']:.3f}"
            )
    print(json.dumps({"variant": chosen, "kl_over_trial": round(worst, 3), "target": 0.25}))


if __name__ == "__main__":
    main()
