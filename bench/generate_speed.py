"""Batched per-row-m generation against generating point by point, side by side in one run.

8 points (one trained intervention at 8 values of m) x 16 prompts on the default model: one
batched pass (`generate_rows`: every row its own prompt and m, KV cache on) against one call
per point and prompt (what `generate` did for each answer), and one batch per point. Greedy,
so the texts should match; the bench counts those that do. Then the local judge's pass on
the same answers (probe fit and scoring). Ends with one JSON line.

    .venv/bin/python bench/generate_speed.py [--max-new-tokens 32] [--concept sentiment]
"""

import argparse
import json
import time

import numpy as np
import torch

from steerfront.data import load_concept
from steerfront.lm import load_model
from steerfront.methods import Objective, TrainSpec, fit
from steerfront.methods.generate import generate_rows
from steerfront.scoring.judge.local import LocalJudge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concept", default="sentiment")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    lm = load_model(args.model, dtype="float32")
    splits = load_concept(args.concept).split(0.2, 0.2, 0)
    spec = TrainSpec(form="vector", layer=args.layer, objective=Objective("diffmean"))
    intervention = fit(lm, splits.train, spec)
    prompts = list(dict.fromkeys(p.prompt for p in [*splits.test, *splits.val]))[: args.prompts]
    ms = [float(m) for m in np.linspace(2.5, 20, args.points)]
    rows = [(p, m) for m in ms for p in prompts]
    n = args.max_new_tokens

    def batched() -> list[str]:
        return generate_rows(lm, [p for p, _ in rows], intervention, [m for _, m in rows], n)

    def per_point() -> list[str]:
        k = len(prompts)
        return [t for m in ms for t in generate_rows(lm, prompts, intervention, [m] * k, n)]

    def per_answer() -> list[str]:
        return [generate_rows(lm, [p], intervention, [m], n)[0] for p, m in rows]

    generate_rows(lm, prompts[:2], intervention, ms[:2], 4)  # warm up
    seconds, texts = {}, {}
    for name, run in (("batched", batched), ("per_point", per_point), ("per_answer", per_answer)):
        started = time.perf_counter()
        texts[name] = run()
        seconds[name] = time.perf_counter() - started
        print(f"{name:>11}: {seconds[name]:7.1f} s for {len(rows)} answers of {n} tokens")
    same = {k: sum(a == b for a, b in zip(texts["batched"], texts[k], strict=True))
            for k in ("per_point", "per_answer")}  # fmt: skip
    ratio = seconds["per_answer"] / seconds["batched"]
    ratio_point = seconds["per_point"] / seconds["batched"]
    print(f"speed-up of batched per-row-m generation: {ratio:.1f}x over one call per answer, "
          f"{ratio_point:.1f}x over one batch per point")  # fmt: skip
    print(f"identical greedy texts: {same['per_answer']}/{len(rows)} (per answer), "
          f"{same['per_point']}/{len(rows)} (per point)")  # fmt: skip

    started = time.perf_counter()
    judge = LocalJudge(lm, splits.train)
    fitted = time.perf_counter() - started
    judge.score([(p, t) for (p, _), t in zip(rows, texts["batched"], strict=True)])
    judged = time.perf_counter() - started
    accuracy = judge.probe.accuracy
    print(f"local judge: probe fitted in {fitted:.1f} s (held-out accuracy {accuracy:.2f}), "
          f"pass over {len(rows)} answers {judged:.1f} s in all")  # fmt: skip
    print(json.dumps({"answers": len(rows), "max_new_tokens": n, "seconds": seconds,
                      "speedup": ratio, "speedup_per_point": ratio_point, "same": same,
                      "judge_s": judged, "threads": torch.get_num_threads()}))  # fmt: skip


if __name__ == "__main__":
    main()
