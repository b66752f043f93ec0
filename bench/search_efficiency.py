"""Search efficiency: how much of the grid's Pareto front a search reaches with a quarter of
its trials.

On one small space (two forms x four layers x the m range; objective, rank and SPLIT's
coefficients fixed) this runs side by side, sharing one cache of trained interventions:
(a) the exhaustive grid (`--m-values` values of m per form and layer: the reference front),
(b) random search, (c) Optuna TPE, (d) Optuna NSGA-II, each with `--fraction` of the grid's
trial count and the same seed, and (e) TPE with the extended front (`--dense-m`).
Searches (b)-(e) are real `steerfront search` runs (local Ray, MLflow store in the output).

Prints, per strategy, the hypervolume as a fraction of the grid's (one reference point: the
unsteered preference and the grid's worst utility), the trainings it needs on its own and its
wall time; writes `fronts.png` with every front and every point to `points.parquet`. Last line:
JSON of the fractions by name.
Targets: tpe_extended >= 0.95 and tpe > random.

With `--priors N` it measures layer priors instead, on the full space (`--space`, else the
default one: all forms, objectives and layers): TPE guided by `--layer-prior` (navigator by
default) with N trials, plain TPE with N and random search with 4N, same concept and seed,
sharing one cache of trained interventions. Each one's hypervolume (extended front with
`--dense-m`, 0 for the plain one), as each search itself reports it at its end (its front
within --max-kl, the dense points' kl measured where settling needed it), is measured against
the searches' own reference point
(fixed before the first trial: the unsteered preference and `util_floor` below the unsteered
utility; the same for all three, whose baselines are the same) and printed with the
trainings it needs on its own. Last line: JSON with `prior_tpe`, `tpe`, `random_4x` (each
hypervolume as a share of the best of the three) and `trainings` per method.
Target: prior_tpe >= both others, with fewer trainings than tpe.

    .venv/bin/python bench/search_efficiency.py [--concept risk_seeking] [--m-values 12]
    .venv/bin/python bench/search_efficiency.py --priors 24 [--concept sentiment]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from optuna.trial import FixedTrial  # noqa: E402

from steerfront.data import encode_pairs  # noqa: E402
from steerfront.defaults import DEFAULT_MODEL, SEARCH_SPACE, SPLIT  # noqa: E402
from steerfront.errors import SteerfrontError  # noqa: E402
from steerfront.lm import load_model  # noqa: E402
from steerfront.memory import MemoryCache, default_cache_bytes  # noqa: E402
from steerfront.models import load_checked  # noqa: E402
from steerfront.search.best import front, points, read_trials  # noqa: E402
from steerfront.search.pareto import hypervolume  # noqa: E402
from steerfront.search.run import (  # noqa: E402
    new_setup,
    prepare,
    ray_session,
    run_search,
)
from steerfront.search.settings import SearchSettings  # noqa: E402
from steerfront.search.space import Sampler, SearchSpace, load_space  # noqa: E402
from steerfront.search.trial import obtain, score, train_key, train_spec  # noqa: E402

# (name, sampler, dense_m): the strategies that search with a fraction of the grid's trials.
SEARCHES = (("random", "random", 0), ("tpe", "tpe", 0), ("nsga2", "nsga2", 0))
# (name, sampler, guided by the layer prior, trials per N): the layer priors' comparison.
PRIOR_RUNS = (
    ("prior_tpe", "tpe", True, 1),
    ("tpe", "tpe", False, 1),
    ("random_4x", "random", False, 4),
)


def bench_space(path: str | None, layers: list[int] | None) -> SearchSpace:
    """Two forms, the default m ranges, one fixed value for everything else."""
    space = load_space(
        path,
        None
        if path
        else {
            "forms": ["vector", "lora"],
            "objectives": ["split"],
            "rank": [4],
            "gamma": SPLIT["gamma"],
            "m": {form: SEARCH_SPACE["m"][form] for form in ("vector", "lora")},
        },
    )
    if layers:
        space = space.model_copy(update={"layers": layers})
    lists = ("objectives", "steps", *(("rank",) if "lora" in space.forms else ()))
    varied = [n for n in lists if len(getattr(space, n)) > 1]
    floats = ("lr", *(("gamma", "lambda_n", "theta") if "split" in space.objectives else ()))
    varied += [n for n in floats if isinstance(getattr(space, n), tuple)]
    if varied:
        raise SteerfrontError(f"bench space: fix {', '.join(varied)} (only form, layer, m vary)")
    return space


def run_grid(space: SearchSpace, settings: SearchSettings, m_values: int) -> dict:
    """Every (form, layer) trained once and scored at `m_values` values of m in one pass."""
    started = time.perf_counter()
    with ray_session(None):  # the baseline comes from a worker, as in a search
        ((setup, layers, _, _),) = prepare(space, [new_setup(space, settings)], settings.resources)
    lm = load_checked(settings.model)
    splits = setup.splits()
    encoded = encode_pairs(lm.tokenizer, splits.val)
    prefixes = MemoryCache(default_cache_bytes(lm.device))
    rows, keys = [], set()
    for form in space.forms:
        grid = [float(m) for m in np.linspace(*space.m[form], m_values)]
        for layer in layers:
            fixed = FixedTrial({"form": form, "layer": layer, f"m_{form}": grid[0]})
            config = Sampler(space, layers)(fixed)
            spec = train_spec(config, setup.seed)
            intervention, _ = obtain(lm, splits, spec, settings.store, "bench", prefixes)
            keys.add(train_key(spec, lm.spec, splits.train.fingerprint))
            scores = score(lm, encoded, intervention, grid, prefixes, setup, "val")
            rows += [{"form": form, "layer": layer, "m": m, **scores[m]} for m in grid]
            print(f"  grid: {form} layer {layer} done ({len(rows)} points)", flush=True)
    return {
        "points": rows,
        "trials": len(rows),
        "trainings": len(keys),
        "wall_s": time.perf_counter() - started,
        "baseline": setup.baseline,
    }


def run_strategy(space: SearchSpace, settings: SearchSettings, cache: Path, extended: bool) -> dict:
    """One real search whose trained interventions come from (and go to) the shared cache."""
    folder = settings.folder
    folder.mkdir(parents=True)
    (folder / "cache").symlink_to(cache.resolve(), target_is_directory=True)
    started = time.perf_counter()
    summary = run_search(space, settings)
    done = [r for r in read_trials(folder) if r["status"] == "done"]
    return {
        "summary": summary,
        "points": points(done, extended),
        "trials": summary["trials"],
        "trainings": len({r["train_key"] for r in done}),
        "wall_s": time.perf_counter() - started,
    }


def volume(result: dict, reference: tuple[float, float]) -> float:
    """Hypervolume of a strategy's points (pref_odds and util_odds) from `reference`."""
    xy = np.array([[r["pref_odds"], r["util_odds"]] for r in result["points"]])
    return hypervolume(xy, reference)


def run_priors(args: argparse.Namespace, out: Path, layers: list[int] | None) -> None:
    """`--priors N`: prior-guided TPE, plain TPE and random search with 4N trials (module
    docstring)."""
    space = load_space(args.space, {"layers": layers})
    cache = out / "cache"
    cache.mkdir(parents=True)
    results = {}
    for name, sampler, guided, times in PRIOR_RUNS:
        print(f"{name}: {times * args.priors} trials", flush=True)
        settings = SearchSettings(
            name=name,
            model=args.model,
            concept=args.concept,
            trials=times * args.priors,
            sampler=sampler,
            seed=args.seed,
            storage=str(out / "runs"),
            dense_m=args.dense_m,
            layer_prior=args.layer_prior if guided else "none",
        )
        results[name] = run_strategy(space, settings, cache, extended=args.dense_m > 0)
    state = json.loads((out / "runs" / "prior_tpe" / "search.json").read_text())
    key = "hypervolume_extended" if args.dense_m > 0 else "hypervolume"
    volumes = {name: result["summary"][key] for name, result in results.items()}
    references = {tuple(result["summary"]["hypervolume_reference"]) for result in results.values()}
    if len(references) > 1:
        raise SystemExit(f"the searches' reference points differ: {sorted(references)}")
    (reference,) = references
    best = max(volumes.values())
    if best <= 0:
        raise SystemExit(
            "no search's front beats the unsteered model: more trials or another concept"
        )
    print(f"\nconcept {args.concept}, model {args.model}, seed {args.seed}, reference {reference}")
    print(f"layer prior ({args.layer_prior}): {state['layer_prior']['scores']}")
    print(f"{'method':<11}{'trials':>7}{'points':>8}{'trainings':>11}{'wall s':>9}"
          f"{'hypervolume':>13}{'share':>8}")  # fmt: skip
    for name, result in results.items():
        print(
            f"{name:<11}{result['trials']:>7}{len(result['points']):>8}{result['trainings']:>11}"
            f"{result['wall_s']:>9.0f}{volumes[name]:>13.3f}{volumes[name] / best:>8.3f}"
        )
    summary = {name: round(volumes[name] / best, 4) for name in results}
    summary["trainings"] = {name: result["trainings"] for name, result in results.items()}
    print(json.dumps(summary))


def plot(results: dict[str, dict], reference: tuple[float, float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    grid = results["grid"]["points"]
    ax.scatter([r["pref_odds"] for r in grid], [r["util_odds"] for r in grid], s=6, color="0.75")
    for name, result in results.items():
        rows = front(result["points"])
        ax.step(
            [r["pref_odds"] for r in rows],
            [r["util_odds"] for r in rows],
            where="pre",  # between two front points, the dominated area reaches the right one
            lw=2.2 if name == "grid" else 1.2,
            label=f"{name} ({result['fraction']:.2f})",
        )
    ax.axvline(reference[0], color="0.5", ls=":", lw=0.8)
    ax.axhline(reference[1], color="0.5", ls=":", lw=0.8)
    ax.set_xlabel("pref_odds (validation)")
    ax.set_ylabel("util_odds (validation)")
    ax.set_title("Pareto fronts (legend: hypervolume / grid's)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--concept", default="risk_seeking", help="a short-answer concept")
    parser.add_argument("--space", default=None, help="space YAML (only form, layer, m vary)")
    parser.add_argument("--layers", default=None, help="comma-separated (default: four layers)")
    parser.add_argument("--m-values", type=int, default=12, help="grid values of m per form")
    parser.add_argument("--fraction", type=float, default=0.25, help="searches' share of trials")
    parser.add_argument("--dense-m", type=int, default=9, help="dense m of tpe_extended")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--priors", type=int, default=None, metavar="N", help="compare layer priors instead"
    )
    parser.add_argument(
        "--layer-prior", choices=("navigator", "lens"), default="navigator", help="with --priors"
    )
    parser.add_argument("--out", default="bench-output/search_efficiency")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # fresh runs, fresh cache: timings comparable
    layers = [int(v) for v in args.layers.split(",")] if args.layers else None
    if args.priors:
        run_priors(args, out, layers)
        return
    space = bench_space(args.space, layers)
    if not layers:
        n_layers = load_model(args.model).n_layers
        step = n_layers // 2 / 3
        space = space.model_copy(
            update={"layers": [int(n_layers // 4 + round(i * step)) for i in range(4)]}
        )

    def settings(
        name: str, sampler: str = "tpe", trials: int = 1, dense_m: int = 0
    ) -> SearchSettings:
        return SearchSettings(
            name=name,
            model=args.model,
            concept=args.concept,
            trials=trials,
            sampler=sampler,
            seed=args.seed,
            storage=str(out / "runs"),
            dense_m=dense_m,
        )

    print(f"grid: {space.forms} x layers {space.layers} x {args.m_values} values of m", flush=True)
    grid = settings("grid")
    results = {"grid": run_grid(space, grid, args.m_values)}
    cache = grid.folder / "cache"  # the grid trained every intervention the searches need
    budget = max(1, round(args.fraction * results["grid"]["trials"]))
    strategies = [*SEARCHES, ("tpe_extended", "tpe", args.dense_m)]
    for name, sampler, dense_m in strategies:
        print(f"{name}: {budget} trials", flush=True)
        run = settings(name, sampler, budget, dense_m)
        results[name] = run_strategy(space, run, cache, extended=dense_m > 0)

    baseline = results["grid"]["baseline"]
    worst = min(r["util_odds"] for r in results["grid"]["points"])
    reference = (baseline["val_pref_odds"], worst)
    for result in results.values():
        result["hypervolume"] = volume(result, reference)
    grid_volume = results["grid"]["hypervolume"]
    if grid_volume <= 0:
        raise SystemExit("the grid's front does not beat the unsteered model: widen the space")
    print(f"\nconcept {args.concept}, model {args.model}, reference point {reference}")
    print(f"{'strategy':<14}{'trials':>7}{'points':>8}{'trainings':>11}{'wall s':>9}"
          f"{'hypervolume':>13}{'fraction':>10}")  # fmt: skip
    for name, result in results.items():
        result["fraction"] = result["hypervolume"] / grid_volume
        print(
            f"{name:<14}{result['trials']:>7}{len(result['points']):>8}{result['trainings']:>11}"
            f"{result['wall_s']:>9.0f}{result['hypervolume']:>13.3f}{result['fraction']:>10.3f}"
        )
    print("trainings: distinct trained interventions each strategy needs on its own; the cache "
          "is shared, so each was trained once, by the first strategy to need it")  # fmt: skip
    keys = ("form", "layer", "m", "pref_odds", "util_odds")
    rows = [
        {"strategy": name, **{k: row[k] for k in keys}, "dense": bool(row.get("dense"))}
        for name, result in results.items()
        for row in result["points"]
    ]
    pq.write_table(pa.Table.from_pylist(rows), out / "points.parquet")
    plot(results, reference, out / "fronts.png")
    print(f"plot: {out / 'fronts.png'}")
    print(json.dumps({name: round(results[name]["fraction"], 4) for name, *_ in strategies}))


if __name__ == "__main__":
    main()
