"""Training with the frozen prefix vs. through the full model, side by side in one run.

Trains SPLIT for one epoch on the same pairs at layer L/2 of the default model twice, and prints
the ratio of the times and the largest difference in the trained parameters. The last line is
JSON: {"speedup": ..., "max_param_diff": ...}. Target: speedup >= 1.6, same result to 1e-4.

    .venv/bin/python bench/train_speed.py [--pairs 64] [--form lora]
"""

from __future__ import annotations

import argparse
import json
import time

from steerfront.data import encode_pairs, load_concept
from steerfront.methods import Objective, TrainSpec, train
from steerfront.models import load_checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concept", default="agreeableness")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--form", default="lora", choices=["vector", "lora", "local_weight"])
    args = parser.parse_args()

    lm = load_checked(args.model)
    encoded = encode_pairs(lm.tokenizer, load_concept(args.concept))[: args.pairs]
    # One pass over the pairs (8 steps for 64 pairs), as before the step budget.
    steps = -(-len(encoded) // 8)
    spec = TrainSpec(
        form=args.form, layer=lm.n_layers // 2, objective=Objective("split"), steps=steps
    )
    print(f"model {lm.spec}, layer {spec.layer}/{lm.n_layers}, {len(encoded)} pairs, {spec.form}")
    results, seconds = {}, {}
    for name, frozen in (("full model", False), ("frozen prefix", True)):
        started = time.perf_counter()
        results[name] = train(lm, encoded, spec, use_frozen_prefix=frozen)
        seconds[name] = time.perf_counter() - started
        print(f"{name:<14} {seconds[name]:7.2f} s")
    full, ours = results["full model"].params, results["frozen prefix"].params
    diff = max((full[k] - ours[k]).abs().max().item() for k in full)
    speedup = seconds["full model"] / seconds["frozen prefix"]
    print(f"speedup {speedup:.2f}x, max parameter difference {diff:.2e}")
    print(json.dumps({"speedup": round(speedup, 3), "max_param_diff": diff}))


if __name__ == "__main__":
    main()
