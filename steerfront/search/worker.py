"""The driver's model work, done in a Ray worker with a trial's resources.

The unsteered and prompted baselines, the test metrics of dense points and the exported best
configuration come from the model as a trial loads it (same device and dtype: bf16 on a GPU
worker), so that `util_drop` compares numbers of one precision, and the driver (a CPU head
node, say) never holds the model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from steerfront.defaults import KL_TOKENS
from steerfront.errors import SteerfrontError
from steerfront.lm import LM, load_config, resolve
from steerfront.memory import GB, MemoryCache, check_share, device_memory
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.kl import prompted_kl
from steerfront.scoring.priors import layer_scores
from steerfront.search.best import export, front, pick, provenance
from steerfront.search.space import SearchSpace
from steerfront.search.tracking import KL_METRICS
from steerfront.search.trial import (
    SCORED_SPLITS,
    SearchSetup,
    cached,
    neutral_answers,
    point_metrics,
    score_kl,
    score_test,
)

T = TypeVar("T")


def in_worker(work: Callable[..., T], resources: dict[str, float], *args: object) -> T:
    """`work(*args)` in a Ray worker process of its own, which exits afterwards (and frees the
    model's memory for the trials); a SteerfrontError there comes back as its one line."""
    return _get([_task(work, resources).remote(*args)])[0]


def in_workers(
    work: Callable[..., list[T]],
    resources: dict[str, float],
    items: list,
    workers: int,
    *args: object,
    sizes: list[float] | None = None,
) -> list[T]:
    """`work(chunk, *args)` (a result per item of `chunk`, in order) over `items` shared among
    up to `workers` Ray worker processes at once (as `in_worker`'s: each loads the model once
    for its whole chunk), the chunks balanced by the items' `sizes` (their expected cost;
    default: equal), so that no worker waits on one given all the large ones; the results in
    the order of `items`."""
    chunks = balanced(sizes or [1.0] * len(items), workers)
    task = _task(work, resources)
    done = _get([task.remote([items[i] for i in chunk], *args) for chunk in chunks])
    results: list = [None] * len(items)
    for chunk, part in zip(chunks, done, strict=True):
        for i, result in zip(chunk, part, strict=True):
            results[i] = result
    return results


def slots(resources: dict[str, float]) -> int:
    """How many workers with `resources` each (a trial's) the Ray cluster holds at once."""
    import ray

    total = ray.cluster_resources()
    if resources["gpu"] > 0:
        return max(1, int(total.get("GPU", 0) / resources["gpu"]))
    return max(1, int(total.get("CPU", 1) / max(resources["cpu"], 1e-9)))


def balanced(sizes: list[float], workers: int) -> list[list[int]]:
    """Indices of `sizes` in up to `workers` chunks of near-equal total size: the largest
    first, each to the chunk with the least so far (ascending within a chunk)."""
    chunks: list[list[int]] = [[] for _ in range(max(1, min(workers, len(sizes))))]
    totals = [0.0] * len(chunks)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        j = totals.index(min(totals))
        chunks[j].append(i)
        totals[j] += sizes[i]
    return [sorted(chunk) for chunk in chunks]


def _task(work: Callable, resources: dict[str, float]) -> object:
    import ray

    return ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_calls=1)(work)


def _get(refs: list) -> list:
    import ray

    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if not isinstance(exc.cause, SteerfrontError):
            raise
        raise SteerfrontError(str(exc.cause)) from None


@dataclass
class Unsteered:
    """What the search learns from the model before its first trial (`unsteered`)."""

    # `SearchSetup` fields: the unsteered model's metrics per scored split (`baseline`, with
    # their intervals), its per-pair utility (`baseline_util`: what each trial's util_drop is
    # measured against) and preference (`baseline_pref`: what `best`'s paired verdict measures
    # a pick's gain against), and the same of the prompted model (`prompted`, with its
    # util_drop and `prompted_kl`; `prompted_pref`)
    baselines: dict[str, dict]
    layers: list[int]  # the layers to search
    memory: dict[str, float]  # `cache_gb`, and on a GPU `trial_memory_gb`
    prior: dict[int, float]  # the layer prior's score per layer searched; empty for none


def unsteered(
    setups: list[SearchSetup], space: SearchSpace, prior: str = "none"
) -> list[Unsteered]:
    """Per setup (one per concept of a launch; they share the model and its settings): the
    unsteered and prompted models' scores, the layers to search, the memory settings and,
    unless `prior` is none, the layer prior's scores of those layers (`scoring.priors`: the
    navigator's d + c, or the lens), from one pass over the training pairs while the model is
    loaded here anyway, once for all setups. The space is checked against the model's
    configuration, and a trial's memory against its share of the GPU, before the model loads."""
    setup = setups[0]
    config = load_config(setup.model)
    device, dtype = resolve(setup.device, setup.dtype)
    d, ff = config.hidden_size, config.intermediate_size  # the down-projection's shape
    layers = space.check_model(config.num_hidden_layers, min(d, ff))
    memory = {"cache_gb": round(setup.cache_bytes(device) / GB, 3)}
    if device.type == "cuda":
        estimate = check_share(
            config,
            dtype,
            device_memory(device),
            setup.share(device),
            setup.cache_gb,
            forms=tuple(space.forms),
            rank=max(space.rank),
            stored_layers=config.num_hidden_layers - min(layers),
        )
        memory["trial_memory_gb"] = round(estimate["total"] / GB, 2)
    lm = setup.load()
    return [
        Unsteered(_baselines(lm, s), layers, memory, _prior(lm, s, layers, prior)) for s in setups
    ]


def _baselines(lm: LM, setup: SearchSetup) -> dict[str, dict]:
    """`Unsteered.baselines` of one setup."""
    splits = setup.splits()
    baseline, utils, prefs, prompted, prompted_prefs = {}, {}, {}, {}, {}
    for name in SCORED_SPLITS:
        pairs = getattr(splits, name)
        scores = evaluate(lm, setup.encode(lm, pairs), None, 0.0, per_token=setup.per_token)
        utils[name], prefs[name] = scores.util.tolist(), scores.pref.tolist()
        metrics = point_metrics(scores, scores.util, setup.seed, "val")[0.0]
        baseline.update({f"{name}_{k}": v for k, v in metrics.items() if "drop" not in k})
        asked = setup.encode(lm, pairs.instructed(setup.instruction))
        scores = evaluate(lm, asked, None, 0.0, per_token=setup.per_token)
        prompted_prefs[name] = scores.pref.tolist()
        metrics = point_metrics(scores, np.asarray(utils[name]), setup.seed, "val")[0.0]
        prompted.update({f"{name}_{k}": v for k, v in metrics.items()})
    answers = neutral_answers(lm, setup)  # once, before the trials (which read them from the cache)
    baseline["val_kl"] = 0.0  # the unsteered model's kl from itself, by definition
    kl = prompted_kl(lm, answers, setup.instruction, tokens=KL_TOKENS).metrics(setup.seed)[0.0]
    prompted.update({f"val_{k}": v for k, v in kl.items()})
    return {
        "baseline": baseline,
        "baseline_util": utils,
        "baseline_pref": prefs,
        "prompted": prompted,
        "prompted_pref": prompted_prefs,
    }


def _prior(lm: LM, setup: SearchSetup, layers: list[int], prior: str) -> dict[int, float]:
    """`Unsteered.prior` of one setup."""
    if prior == "none":
        return {}
    priors = layer_scores(lm, setup.encode(lm, setup.splits().train), layers=layers)
    values = priors.score if prior == "navigator" else priors.lens
    return {layer: float(v) for layer, v in zip(priors.layers, values, strict=True)}


@dataclass
class Settled:
    """The extended front with every point's kl and test metrics, the pick on it (an index;
    None, with `problem` saying why), the files that export the pick (none unless it beats
    the unsteered model) and the dense points' kl (those settling scored among them)."""

    front: list[dict]
    best: int | None
    problem: str | None
    files: dict[str, bytes]
    dense_kl: list[dict]


def settle(candidates: list[dict], setup: SearchSetup, lm: LM, cache: MemoryCache) -> list[dict]:
    """The front of `candidates` (the extended points) with kl known for each of its points:
    a dense point's kl is scored only once it reaches the front, and one above `max_kl` then
    leaves it, uncovering the points it dominated, until every point on it is known."""
    while True:
        rows = front(candidates, *setup.axes)
        todo = [r for r in rows if r.get("kl") is None]
        if not todo:
            return rows
        score_kl(todo, setup, lm, cache)


def settle_and_export(jobs: list[tuple[list[dict], SearchSetup, float]]) -> list[Settled]:
    """Per job (`candidates`, `setup`, `max_util_drop`; one per concept of a launch, sharing
    the model, loaded once): the extended front, settled (`settle`) and scored on test, the
    pick on it (`best`'s default rule) and the files that export it."""
    setup = jobs[0][1]
    lm = setup.load()
    cache = MemoryCache(setup.cache_bytes(lm.device))  # across the loop and the concepts
    return [_settle_and_export(lm, cache, *job) for job in jobs]


def _settle_and_export(
    lm: LM, cache: MemoryCache, candidates: list[dict], setup: SearchSetup, max_util_drop: float
) -> Settled:
    rows = settle(candidates, setup, lm, cache)
    scored = [
        {k: r[k] for k in ("trial_id", "m", *KL_METRICS)}
        for r in candidates
        if r["dense"] and r.get("kl") is not None
    ]
    best, problem, files = None, None, {}
    try:
        objectives, max_kl = setup.axes
        chosen = pick(rows, max_util_drop=max_util_drop, max_kl=max_kl, objectives=objectives)
        cached(setup.store, chosen["train_key"], required=True)
        best = rows.index(chosen)
    except SteerfrontError as exc:
        problem = str(exc)
    score_test(rows, setup, lm, cache)
    about = None if best is None else provenance(asdict(setup), rows[best], max_util_drop)
    if about is not None and about["beats_baseline"]:
        source = cached(setup.store, rows[best]["train_key"], required=True)
        with tempfile.TemporaryDirectory() as tmp:
            folder = export(rows[best], Path(tmp) / "best", source, lm, about, replace=True)
            paths = sorted(p for p in folder.rglob("*") if p.is_file())
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in paths}
    return Settled(rows, best, problem, files, scored)
