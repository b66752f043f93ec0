"""How well does each layer prior (navigator d+c, lens) predict the layers where DiffMean works?

Per concept (the four built-in ones and the shared psychopathy and power-seeking sets), every
layer's priors and DiffMean's test preference gain at kl 0.1 nats per token, exactly as
`steerfront layers` computes them (`scoring.priors.layer_scores`: the search's split, seed 0).
Per prior: the Spearman rho of the prior against the gain over the layers where kl reached its
target (95% bootstrap interval, layers resampled), and the top-3 hit rate (the share of the
prior's 3 best layers among the gain's 3 best). Then the mean over concepts; last line JSON.
Only DiffMean's gain: a trained form's per-layer sweep is too slow for a 2-core CPU.

Each concept's layer rows are kept in `--out`/CONCEPT.json and read back on a later run (so
one concept per command, then a last run over all of them prints the whole table):

    .venv/bin/python bench/layer_priors.py [--concepts sentiment ...] [--out runs/layer-priors]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from kl_utility import CONCEPTS  # the same six concepts (bench/ is on the path)
from scipy.stats import ConstantInputWarning, spearmanr

from steerfront.data import encode_pairs, load_concept
from steerfront.defaults import PRIORS, SEARCH
from steerfront.lm import LM, load_model
from steerfront.scoring.priors import layer_scores

PRIOR_COLUMNS = {"navigator": "score", "lens": "lens"}  # prior -> `steerfront layers` column
TOP = 3
BOOTSTRAP = 2000


def measure(lm: LM, spec: str, max_pairs: int) -> dict:
    """One concept's layer rows (`LayerScores.rows()`), as `steerfront layers --json` has them."""
    pairs = load_concept(spec)
    if len(pairs) > max_pairs:  # the shared sets hold ~1000 pairs: a sample is plenty
        order = np.random.default_rng(0).permutation(len(pairs))[:max_pairs]
        pairs = pairs.subset(sorted(order.tolist()), f"sample of {max_pairs}")
    splits = pairs.split(SEARCH["val_fraction"], SEARCH["test_fraction"], SEARCH["seed"])
    train = encode_pairs(lm.tokenizer, splits.train)
    test = encode_pairs(lm.tokenizer, splits.test)
    start = time.perf_counter()
    rows = layer_scores(lm, train, test).rows()
    return {
        "train": len(train),
        "test": len(test),
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }


def rho(x: np.ndarray, y: np.ndarray) -> float:
    with warnings.catch_warnings():  # a resample of one repeated layer is constant: NaN
        warnings.simplefilter("ignore", ConstantInputWarning)
        value = spearmanr(x, y).statistic
    return float(value) if np.isfinite(value) else float("nan")


def top(values: np.ndarray, k: int = TOP) -> set[int]:
    return set(np.argsort(-values, kind="stable")[:k].tolist())


def agreement(prior: np.ndarray, gain: np.ndarray, seed: int = 0) -> dict:
    """Spearman rho of `prior` against `gain` with a bootstrap interval over layers, and the
    top-3 hit rate (NaN where no layer has a gain)."""
    if len(gain) < 2:
        return {"rho": float("nan"), "lo": float("nan"), "hi": float("nan"), "top3": float("nan")}
    rng = np.random.default_rng(seed)
    draws = [rho(prior[i], gain[i]) for i in rng.integers(0, len(gain), (BOOTSTRAP, len(gain)))]
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    hits = len(top(prior) & top(gain)) / min(TOP, len(gain))
    return {"rho": rho(prior, gain), "lo": float(lo), "hi": float(hi), "top3": hits}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS))
    parser.add_argument("--max-pairs", type=int, default=300)
    parser.add_argument("--out", default="runs/layer-priors")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm: LM | None = None
    table: dict[str, dict] = {}
    for spec in args.concepts:
        path = out / f"{Path(spec).stem}.json"
        if not path.exists():
            if lm is None:
                lm = load_model(args.model)
            path.write_text(json.dumps(measure(lm, spec, args.max_pairs), indent=1))
        rows = [r for r in json.loads(path.read_text())["rows"] if r["gain"] is not None]
        gain = np.array([r["gain"] for r in rows])
        table[path.stem] = {
            prior: agreement(np.array([r[column] for r in rows]), gain)
            for prior, column in PRIOR_COLUMNS.items()
        } | {"layers": len(rows)}

    print(
        f"\nDiffMean gain at kl {PRIORS['kl']:g} vs layer priors ({args.model}; 95% CI over layers)"
    )
    print(f"{'concept':<26} {'layers':>6} {'prior':<10} {'rho [lo, hi]':>22} {'top-3 hits':>10}")
    for name, entry in table.items():
        for prior in PRIOR_COLUMNS:
            e = entry[prior]
            cell = f"{e['rho']:+.2f} [{e['lo']:+.2f}, {e['hi']:+.2f}]"
            print(f"{name:<26} {entry['layers']:>6} {prior:<10} {cell:>22} {e['top3']:>10.2f}")
    mean = {
        prior: {
            key: float(np.nanmean([entry[prior][key] for entry in table.values()]))
            for key in ("rho", "top3")
        }
        for prior in PRIOR_COLUMNS
    }
    for prior, m in mean.items():
        label = f"mean of {len(table)}"
        print(f"{label:<26} {'':>6} {prior:<10} {m['rho']:>+22.2f} {m['top3']:>10.2f}")
    summary = {"kl": PRIORS["kl"], "concepts": table, "mean": mean}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
