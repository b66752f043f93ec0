"""What `kl` looks like on the default model: a DiffMean vector for the built-in `sentiment`
concept (from its training split) at a few layers and values of m, on the default neutral
answers; beside each point, the start of the steered model's own greedy answer to the first
neutral prompt, to tell fluent from broken text by eye.

    .venv/bin/python bench/kl_scale.py [--layers 7 13 15 20] [--m 1 2 3 5 8]
"""

from __future__ import annotations

import argparse

from steerfront.data import encode_pairs, load_concept
from steerfront.data.prompts import neutral_prompts
from steerfront.defaults import KL_NEW_TOKENS, KL_PROMPTS, KL_TOKENS, SEARCH
from steerfront.lm import load_model
from steerfront.memory import MemoryCache
from steerfront.methods import diffmean
from steerfront.methods.generate import generate
from steerfront.methods.interventions import Intervention
from steerfront.scoring.kl import kl_scores, unsteered_answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concept", default="sentiment")
    parser.add_argument("--layers", type=int, nargs="+", default=[7, 13, 15, 20])
    parser.add_argument("--m", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 8.0])
    args = parser.parse_args()

    lm = load_model(args.model)
    prompts = neutral_prompts(count=KL_PROMPTS)
    answers = unsteered_answers(lm, prompts, KL_NEW_TOKENS)
    splits = load_concept(args.concept).split(SEARCH["val_fraction"], SEARCH["test_fraction"], 0)
    vectors = diffmean(lm, encode_pairs(lm.tokenizer, splits.train))
    cache = MemoryCache(1 << 31)
    print(f"unsteered answer to {prompts[0]!r}: {answers.texts(lm.tokenizer)[0][:90]!r}")
    print(
        f"{'layer':>5} {'|v|':>6} {'m':>5} {'kl(48)':>8} {'[95% CI]':>16} {f'kl({KL_TOKENS})':>8} "
        f"{'kl_first':>8}  steered answer"
    )
    for layer in args.layers:
        vector = Intervention("vector", layer, {"v": vectors[layer]})
        full = kl_scores(lm, vector, args.m, answers, cache, tokens=None).metrics()
        short = kl_scores(lm, vector, args.m, answers, cache).metrics()
        _, texts = generate(lm, prompts[0], vector, args.m, max_new_tokens=32)
        for m, text in zip(args.m, texts, strict=True):
            row = full[m]
            print(
                f"{layer:>5} {float(vectors[layer].norm()):>6.2f} {m:>5g} {row['kl']:>8.3f} "
                f"[{row['kl_lo']:>6.3f}, {row['kl_hi']:>6.3f}] {short[m]['kl']:>8.3f} "
                f"{row['kl_first']:>8.3f}  {text[:70]!r}"
            )


if __name__ == "__main__":
    main()
