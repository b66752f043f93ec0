"""How well does each layer prior (navigator d+c, lens) predict the layers where steering works?

Per concept (the four built-in ones and the shared psychopathy and power-seeking sets), every
layer's priors and DiffMean's test preference gain at kl 0.1 nats per token, exactly as
`steerfront layers` computes them (`scoring.priors.layer_scores`: the search's split, seed 0).
Per prior: the Spearman rho of the prior against the gain over the layers where kl reached its
target (95% bootstrap interval, layers resampled), and the top-3 hit rate (the share of the
prior's 3 best layers among the gain's 3 best). Then the mean over concepts; last line JSON.

With `--trained FORM` it also trains that form with the SFT objective (`--steps` steps, the
trainer's defaults otherwise) at every `--every`-th layer and measures its test gain at the
same kl (m found as for DiffMean, from the form's m range up), and rates the priors, and
DiffMean's gain as a third one, against that gain over those layers.

Each concept's layer rows are kept in `--out`/CONCEPT.json (the trained sweep's in
CONCEPT.FORM-sft-STEPS.json) and read back on a later run (so one concept per command, then a
last run over all of them prints the whole table):

    .venv/bin/python bench/layer_priors.py [--concepts sentiment ...] [--out runs/layer-priors]
    .venv/bin/python bench/layer_priors.py --trained vector --steps 16 --every 2 [--concepts ...]
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
from tqdm.auto import tqdm

from steerfront.data import Splits, encode_pairs, load_concept
from steerfront.defaults import FORMS, PRIORS, SEARCH, SEARCH_SPACE
from steerfront.lm import LM, load_model
from steerfront.memory import MemoryCache
from steerfront.methods.objectives import Objective, TrainSpec
from steerfront.methods.train import fit
from steerfront.scoring.priors import gain_at_kl, layer_scores, neutral_kl

PRIOR_COLUMNS = {"navigator": "score", "lens": "lens"}  # prior -> `steerfront layers` column
TOP = 3
BOOTSTRAP = 2000


def concept_splits(spec: str, max_pairs: int) -> Splits:
    """The search's split of a concept (the shared sets sampled down to `max_pairs`)."""
    pairs = load_concept(spec)
    if len(pairs) > max_pairs:  # the shared sets hold ~1000 pairs: a sample is plenty
        order = np.random.default_rng(0).permutation(len(pairs))[:max_pairs]
        pairs = pairs.subset(sorted(order.tolist()), f"sample of {max_pairs}")
    return pairs.split(SEARCH["val_fraction"], SEARCH["test_fraction"], SEARCH["seed"])


def measure(lm: LM, spec: str, max_pairs: int) -> dict:
    """One concept's layer rows (`LayerScores.rows()`), as `steerfront layers --json` has them."""
    splits = concept_splits(spec, max_pairs)
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


def measure_trained(lm: LM, spec: str, max_pairs: int, form: str, steps: int, every: int) -> dict:
    """`form` trained with SFT at every `every`-th layer: per layer its test gain in mean
    pref_odds over the unsteered model at the m where kl reaches `PRIORS["kl"]` (None where
    it never does; `gain_at_kl` from the top of the form's m range, as for DiffMean)."""
    splits = concept_splits(spec, max_pairs)
    test = encode_pairs(lm.tokenizer, splits.test)
    start, layers = time.perf_counter(), list(range(0, lm.n_layers, every))
    trained = [
        fit(lm, splits.train, TrainSpec(form, layer, Objective("sft"), steps=steps))
        for layer in tqdm(layers, desc=f"training {form} ({spec})")
    ]
    cache = MemoryCache(512 << 20)
    top = [SEARCH_SPACE["m"][form][1]] * len(layers)
    gain, m = gain_at_kl(lm, trained, top, test, neutral_kl(lm, cache=cache), cache=cache)
    rows = [  # NaN (kl never reached its target) as None, as in `LayerScores.rows()`
        {"layer": layer, "gain": float(g), "m": float(x)}
        if np.isfinite(g)
        else {"layer": layer, "gain": None, "m": None}
        for layer, g, x in zip(layers, gain, m, strict=True)
    ]
    return {"form": form, "steps": steps, "seconds": time.perf_counter() - start, "rows": rows}


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


def rate(rows: list[dict], gains: dict[int, float], columns: dict[str, str]) -> dict:
    """Each predictor's (`columns`: name -> layer-row column) `agreement` with `gains` (per
    layer) over the layers where the gain and every predictor are measured."""
    rows = [
        r for r in rows if r["layer"] in gains and all(r[c] is not None for c in columns.values())
    ]
    gain = np.array([gains[r["layer"]] for r in rows])
    return {
        name: agreement(np.array([r[column] for r in rows]), gain)
        for name, column in columns.items()
    } | {"layers": len(rows)}


def print_table(title: str, table: dict[str, dict], predictors: list[str]) -> dict:
    """The table's rows, then the mean over concepts per predictor (returned)."""
    print(f"\n{title}")
    print(f"{'concept':<26} {'layers':>6} {'prior':<10} {'rho [lo, hi]':>22} {'top-3 hits':>10}")
    for name, entry in table.items():
        for prior in predictors:
            e = entry[prior]
            cell = f"{e['rho']:+.2f} [{e['lo']:+.2f}, {e['hi']:+.2f}]"
            print(f"{name:<26} {entry['layers']:>6} {prior:<10} {cell:>22} {e['top3']:>10.2f}")
    mean = {
        prior: {
            key: float(np.nanmean([entry[prior][key] for entry in table.values()]))
            for key in ("rho", "top3")
        }
        for prior in predictors
    }
    for prior, m in mean.items():
        label = f"mean of {len(table)}"
        print(f"{label:<26} {'':>6} {prior:<10} {m['rho']:>+22.2f} {m['top3']:>10.2f}")
    return mean


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS))
    parser.add_argument("--max-pairs", type=int, default=300)
    parser.add_argument("--trained", choices=FORMS, default=None, help="also sweep this form")
    parser.add_argument("--steps", type=int, default=16, help="training steps (with --trained)")
    parser.add_argument("--every", type=int, default=1, help="train every n-th layer")
    parser.add_argument("--out", default="runs/layer-priors")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm: LM | None = None

    def kept(path: Path, make) -> dict:
        """The measurement at `path`, made (with the model, loaded once) if not there."""
        nonlocal lm
        if not path.exists():
            lm = lm if lm is not None else load_model(args.model)
            path.write_text(json.dumps(make(lm), indent=1))
        return json.loads(path.read_text())

    table: dict[str, dict] = {}
    trained: dict[str, dict] = {}
    for spec in args.concepts:
        stem = Path(spec).stem
        rows = kept(out / f"{stem}.json", lambda lm, spec=spec: measure(lm, spec, args.max_pairs))[
            "rows"
        ]
        gains = {r["layer"]: r["gain"] for r in rows if r["gain"] is not None}
        table[stem] = rate(rows, gains, PRIOR_COLUMNS)
        if args.trained:
            done = kept(
                out / f"{stem}.{args.trained}-sft-{args.steps}.json",
                lambda lm, spec=spec: measure_trained(
                    lm, spec, args.max_pairs, args.trained, args.steps, args.every
                ),
            )
            gains = {r["layer"]: r["gain"] for r in done["rows"] if r["gain"] is not None}
            trained[stem] = rate(rows, gains, PRIOR_COLUMNS | {"diffmean": "gain"})

    where = f"{args.model}; 95% CI over layers"
    mean = print_table(
        f"DiffMean gain at kl {PRIORS['kl']:g} vs layer priors ({where})", table, [*PRIOR_COLUMNS]
    )
    summary = {"kl": PRIORS["kl"], "concepts": table, "mean": mean}
    if args.trained:
        title = f"{args.trained} (SFT, {args.steps} steps) gain at kl {PRIORS['kl']:g} ({where})"
        predictors = [*PRIOR_COLUMNS, "diffmean"]
        summary["trained"] = {
            "form": args.trained,
            "steps": args.steps,
            "concepts": trained,
            "mean": print_table(title, trained, predictors),
        }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
