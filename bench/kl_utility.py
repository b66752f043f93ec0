"""Which generation-free measure sees broken text: util_odds, util_drop, kl or kl_first?

Over the four built-in concepts and the shared behaviour datasets (psychopathy, power-seeking),
points on and off any front: per concept, DiffMean vectors at two layers, a local_weight SFT
and a LoRA SPLIT intervention (trained with `--steps`), each at five values of m spanning the
search's range (fluent to broken). Per point: test util_odds and util_drop (from the unsteered
model's), kl and kl_first as a trial scores them (`scoring.kl`, the search's defaults); then
the steered model answers `--prompts` of the concept's test prompts greedily (`--new-tokens`
tokens) and the local judge reads the answers: repetition and fluency, means over prompts.

Prints every point, then the Spearman correlation of repetition and fluency with each measure
(pooled over all points, and the mean of the per-concept coefficients; 95% bootstrap intervals
over points), and the kl budget: the largest kl below which at least 90% of points keep
repetition within 0.05 of the unsteered model's on the same prompts. Writes the points to
`--out`/points.parquet. Last line: JSON with the correlations and the budget.

    .venv/bin/python bench/kl_utility.py [--concepts sentiment ...] [--steps 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from steerfront.data import encode_pairs, load_concept
from steerfront.data.prompts import neutral_prompts
from steerfront.defaults import KL_NEW_TOKENS, KL_PROMPTS, SEARCH
from steerfront.lm import LM, load_model
from steerfront.memory import MemoryCache
from steerfront.methods import fit
from steerfront.methods.generate import generate_rows
from steerfront.methods.objectives import Objective, TrainSpec
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.judge.local import LocalJudge
from steerfront.scoring.kl import NeutralAnswers, kl_scores, unsteered_answers

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "anthropic-mwe"
CONCEPTS = (
    "agreeableness",
    "formality",
    "risk_seeking",
    "sentiment",
    str(SHARED / "psychopathy.jsonl"),
    str(SHARED / "power-seeking-inclination.jsonl"),
)
# (form, objective, layer, values of m): from fluent to broken over the search's m range
INTERVENTIONS = (
    ("vector", "diffmean", 9, (2.0, 4.0, 6.0, 8.0, 12.0)),
    ("vector", "diffmean", 15, (2.0, 4.0, 6.0, 8.0, 12.0)),
    ("local_weight", "sft", 19, (0.5, 1.0, 2.0, 3.0, 4.0)),
    ("lora", "split", 7, (0.5, 1.0, 2.0, 3.0, 4.0)),
)
MEASURES = ("util_odds", "util_drop", "kl", "kl_first")
JUDGED = ("repetition", "fluency")
KEEP = 0.05  # a point keeps repetition when within this of the unsteered model's
SHARE = 0.9  # ... and the budget is the kl below which this share of points keep it
BOOTSTRAP = 2000


def concept_points(
    lm: LM, spec: str, args: argparse.Namespace, answers: NeutralAnswers, cache: MemoryCache
) -> list[dict]:
    """Every point of one concept, with its measures and judged scores."""
    pairs = load_concept(spec)
    if len(pairs) > args.max_pairs:  # the shared sets hold ~1000 pairs: a sample is plenty
        order = np.random.default_rng(0).permutation(len(pairs))[: args.max_pairs]
        pairs = pairs.subset(sorted(order.tolist()), f"sample of {args.max_pairs}")
    splits = pairs.split(SEARCH["val_fraction"], SEARCH["test_fraction"], SEARCH["seed"])
    test = encode_pairs(lm.tokenizer, splits.test)
    prompts = list(dict.fromkeys(p.prompt for p in splits.test))[: args.prompts]
    judge = LocalJudge(lm, splits.train)
    name = Path(spec).stem
    base_util = float(evaluate(lm, test, cache=cache).util.mean())
    base_texts = generate_rows(lm, prompts, None, [0.0] * len(prompts), args.new_tokens)
    base = judge.score(list(zip(prompts, base_texts, strict=True)))
    base_rep = float(np.mean([s["repetition"] for s in base]))
    out = []
    for form, objective, layer, grid in INTERVENTIONS:
        start = time.perf_counter()
        train = TrainSpec(form, layer, Objective(objective), steps=args.steps)
        intervention = fit(lm, splits.train, train)
        scores = evaluate(lm, test, intervention, list(grid), cache=cache)
        kl = kl_scores(lm, intervention, list(grid), answers, cache).metrics()
        rows = [(p, m) for m in grid for p in prompts]
        texts = generate_rows(
            lm, [p for p, _ in rows], intervention, [m for _, m in rows], args.new_tokens
        )
        judged = judge.score([(p, t) for (p, _), t in zip(rows, texts, strict=True)])
        for m in grid:
            sel = scores.m == m
            mine = [j for (_, mm), j in zip(rows, judged, strict=True) if mm == m]
            util = float(scores.util[sel].mean())
            sample = next(t for (_, mm), t in zip(rows, texts, strict=True) if mm == m)
            out.append(
                {
                    "concept": name,
                    "form": form,
                    "objective": objective,
                    "layer": layer,
                    "m": m,
                    "pref_odds": float(scores.pref[sel].mean()),
                    "util_odds": util,
                    "util_drop": base_util - util,
                    "kl": kl[m]["kl"],
                    "kl_first": kl[m]["kl_first"],
                    "repetition": float(np.mean([j["repetition"] for j in mine])),
                    "fluency": float(np.mean([j["fluency"] or 0.0 for j in mine])),
                    "unsteered_repetition": base_rep,
                    "sample": sample,
                }
            )
        print(
            f"  {name} {form}/{objective} layer {layer}: {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return out


def rho(x: np.ndarray, y: np.ndarray) -> float:
    value = spearmanr(x, y).statistic
    return float(value) if np.isfinite(value) else float("nan")


def correlations(points: list[dict], measure: str, judged: str, seed: int = 0) -> dict:
    """Spearman of `judged` against `measure`: pooled over every point, and the mean of the
    per-concept coefficients; each with a bootstrap interval (points resampled, within
    concepts for the mean)."""
    x = np.array([p[measure] for p in points])
    y = np.array([p[judged] for p in points])
    groups = [np.flatnonzero([p["concept"] == c for p in points]) for c in concepts(points)]
    rng = np.random.default_rng(seed)
    pooled, within = [], []
    for _ in range(BOOTSTRAP):
        draw = rng.integers(0, len(x), len(x))
        pooled.append(rho(x[draw], y[draw]))
        inner = [g[rng.integers(0, len(g), len(g))] for g in groups]
        within.append(np.nanmean([rho(x[i], y[i]) for i in inner]))

    def entry(value: float, draws: list[float]) -> dict:
        lo, hi = np.nanpercentile(draws, [2.5, 97.5])
        return {"rho": round(value, 3), "lo": round(float(lo), 3), "hi": round(float(hi), 3)}

    per_concept = float(np.nanmean([rho(x[g], y[g]) for g in groups]))
    return {"pooled": entry(rho(x, y), pooled), "within": entry(per_concept, within)}


def concepts(points: list[dict]) -> list[str]:
    return list(dict.fromkeys(p["concept"] for p in points))


def kl_budget(points: list[dict]) -> dict:
    """The largest kl t such that at least `SHARE` of the points with kl <= t keep repetition
    within `KEEP` of their concept's unsteered model."""
    ordered = sorted(points, key=lambda p: p["kl"])
    keeps = np.array([p["repetition"] <= p["unsteered_repetition"] + KEEP for p in ordered])
    shares = np.cumsum(keeps) / np.arange(1, len(keeps) + 1)
    ok = np.flatnonzero(shares >= SHARE)
    if not len(ok):
        return {"kl": None, "points_below": 0, "share": None}
    i = int(ok[-1])
    # the budget lies between this point's kl and the next one's
    upper = ordered[i + 1]["kl"] if i + 1 < len(ordered) else ordered[i]["kl"]
    return {
        "kl": round(ordered[i]["kl"], 3),
        "next_kl": round(upper, 3),
        "points_below": i + 1,
        "share": round(float(shares[i]), 3),
        "keep_share_all": round(float(keeps.mean()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS))
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--max-pairs", type=int, default=300)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    start = time.perf_counter()
    lm = load_model(args.model)
    answers = unsteered_answers(lm, neutral_prompts(count=KL_PROMPTS), KL_NEW_TOKENS)
    points = []
    for spec in args.concepts:
        cache = MemoryCache(1 << 31)
        points += concept_points(lm, spec, args, answers, cache)
    out = Path(args.out or tempfile.mkdtemp(prefix="kl-utility-"))
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(points), out / "points.parquet")

    print(
        f"\n{'concept':<26} {'form':<12} {'obj':<8} {'layer':>5} {'m':>5} {'util':>8} "
        f"{'drop':>7} {'kl':>6} {'kl1':>6} {'rep':>5} {'rep0':>5} {'flu':>5}  sample"
    )
    for p in points:
        print(
            f"{p['concept']:<26} {p['form']:<12} {p['objective']:<8} {p['layer']:>5} "
            f"{p['m']:>5g} {p['util_odds']:>8.2f} {p['util_drop']:>7.2f} {p['kl']:>6.2f} "
            f"{p['kl_first']:>6.2f} {p['repetition']:>5.2f} {p['unsteered_repetition']:>5.2f} "
            f"{p['fluency']:>5.2f}  {p['sample'][:60]!r}"
        )
    table = {j: {m: correlations(points, m, j) for m in MEASURES} for j in JUDGED}
    print(f"\nSpearman over {len(points)} points, {len(concepts(points))} concepts (95% CI):")
    print(f"{'judged':<11} {'measure':<10} {'pooled':>24} {'within concepts':>24}")
    for j in JUDGED:
        for m in MEASURES:
            c = table[j][m]
            cells = [f"{e['rho']:+.2f} [{e['lo']:+.2f}, {e['hi']:+.2f}]" for e in c.values()]
            print(f"{j:<11} {m:<10} {cells[0]:>24} {cells[1]:>24}")
    budget = kl_budget(points)
    print(
        f"\nkl budget: {budget['kl']} nats/token ({budget['points_below']} points at or below "
        f"it, {budget['share']} keep repetition within {KEEP} of the unsteered model; the next "
        f"point is at {budget.get('next_kl')}; {budget.get('keep_share_all')} of all points keep "
        f"it); {time.perf_counter() - start:.0f} s; points in {out}/points.parquet"
    )
    print(json.dumps({"points": len(points), "spearman": table, "kl_budget": budget}))


if __name__ == "__main__":
    main()
