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
    worker_model,
)

T = TypeVar("T")


def in_workers(
    work: Callable[..., T],
    resources: dict[str, float],
    items: list,
    workers: int,
    *args: object,
    sizes: list[float] | None = None,
) -> list[T]:
    """`work(item, *args)` for each of `items`, in up to `workers` Ray worker processes at once,
    each with a trial's `resources`, loading the model once (`trial.worker_model`) and exiting
    afterwards (freeing its memory for the trials); a SteerfrontError there comes back as its
    one line. Each worker takes the next item as it finishes one, the largest by `sizes`
    (expected costs; default: equal) first: a worker that drew a costlier item than its size
    said does not hold the others up. The results in the order of `items`."""
    import ray
    from ray.util.queue import Queue

    sizes = sizes or [1.0] * len(items)
    order = sorted(range(len(items)), key=lambda i: -sizes[i])
    queue = Queue(actor_options={"num_cpus": 0})
    queue.put_nowait_batch(order)
    shared = ray.put(items)
    try:
        task = _task(_drain, resources)
        runs = [task.remote(queue, shared, work, *args) for _ in range(min(workers, len(items)))]
        done = dict(pair for run in _get(runs) for pair in run)
    finally:
        queue.shutdown()
    return [done[i] for i in range(len(items))]


def _drain(queue: object, items: list, work: Callable[..., T], *args: object) -> list[tuple]:
    """`in_workers`' worker: (index, result) of each item it takes until none is left."""
    from ray.util.queue import Empty

    done = []
    while True:
        try:
            i = queue.get_nowait()
        except Empty:
            return done
        done.append((i, work(items[i], *args)))


def slots(resources: dict[str, float]) -> int:
    """How many workers with `resources` each (a trial's) the Ray cluster holds at once."""
    import ray

    total = ray.cluster_resources()
    if resources["gpu"] > 0:
        return max(1, int(total.get("GPU", 0) / resources["gpu"]))
    return max(1, int(total.get("CPU", 1) / max(resources["cpu"], 1e-9)))


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


def unsteered(setup: SearchSetup, space: SearchSpace, prior: str = "none") -> Unsteered:
    """A setup's (a launch has one per concept; they share the model and its settings) unsteered
    and prompted models' scores, the layers to search, the memory settings and, unless `prior`
    is none, the layer prior's scores of those layers (`scoring.priors`: the navigator's d + c,
    or the lens), from one pass over the training pairs while the model is loaded here anyway.
    The space is checked against the model's configuration, and a trial's memory against its
    share of the GPU, before the model loads."""
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
    lm, cache, _ = worker_model(setup)
    return Unsteered(_baselines(lm, setup, cache), layers, memory, _prior(lm, setup, layers, prior))


def _baselines(lm: LM, setup: SearchSetup, cache: MemoryCache) -> dict[str, dict]:
    """`Unsteered.baselines` of one setup (the plain side of the prompted kl read from
    `cache`, which a launch's concepts share)."""
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
    kl = prompted_kl(lm, answers, setup.instruction, cache, tokens=KL_TOKENS)
    prompted.update({f"val_{k}": v for k, v in kl.metrics(setup.seed)[0.0].items()})
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


def settle_and_export(job: tuple[list[dict], SearchSetup, float]) -> Settled:
    """For a job (`candidates`, `setup`, `max_util_drop`; a launch has one per concept, sharing
    the model and its cache in each worker): the extended front, settled (`settle`) and scored
    on test, the pick on it (`best`'s default rule) and the files that export it."""
    lm, cache, _ = worker_model(job[1])
    return _settle_and_export(lm, cache, *job)


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
