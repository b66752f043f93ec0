"""One trial: fetch or train the intervention for its train key, then score it at its m.

`m` is applied after training, so a trial also scores `dense_m` more values of m around its own
in the same batched pass (validation only): the points of the search's extended front.

Runs inside a Ray worker. A worker loads the model once and keeps it, with the tokenized pair
sets, across trials; the frozen-prefix activations of the layers it has seen and the
interventions it has trained or loaded it keeps within one budget in bytes (`--cache-gb`),
dropping the least recently used.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import torch

from steerfront.data import EncodedPair, PairSet, Splits, encode_pairs, load_concept
from steerfront.data.prompts import neutral_prompts
from steerfront.defaults import (
    CONCEPT_INSTRUCTIONS,
    KL_NEW_TOKENS,
    KL_PROMPTS,
    KL_TOKENS,
    SEARCH,
    TRAIN,
    concept_instruction,
)
from steerfront.errors import SteerfrontError
from steerfront.lm import LM, resolve
from steerfront.memory import (
    GB,
    MemoryCache,
    default_cache_bytes,
    release_unused,
    set_cpu_share,
)
from steerfront.methods import Intervention, Objective, TrainSpec, fit
from steerfront.methods.io import load_intervention, save_intervention
from steerfront.models import load_checked
from steerfront.scoring.evaluate import evaluate
from steerfront.scoring.kl import NeutralAnswers, kl_scores, unsteered_answers
from steerfront.scoring.logodds import LogOdds, bootstrap_interval
from steerfront.search.records import PER_PAIR
from steerfront.search.storage import Store

SCORED_SPLITS = ("val", "test")
DENSE_SPAN = 0.5  # the dense values of m cover this fraction of the form's m range
# Set by the reliability tests to inject faults into trials of one form, or of one search of a
# launch: "raise:lora", "exit:lora", "raise:NAME".
FAULT_ENV = "STEERFRONT_FAULT"


@dataclass(frozen=True)
class SearchSetup:
    """What every trial of one search shares (small: it travels to every worker)."""

    model: str
    concept: str
    fmt: str | None
    val_fraction: float
    test_fraction: float
    seed: int
    storage: str  # where searches live: an absolute path or an object-store URI
    name: str  # the search's name (its folder in `storage`; the cache lives there)
    baseline: dict[str, float]  # unsteered metrics per split, e.g. "val_util_odds"
    baseline_util: dict[str, list[float]] = field(default_factory=dict)  # per split, per pair
    baseline_pref: dict[str, list[float]] = field(default_factory=dict)  # per split, per pair
    # The prompted baseline (the unsteered model with `instruction` in each prompt): its
    # metrics as `baseline`'s (with util_drop and kl) and per-pair preference; empty in a
    # search made before it existed.
    prompted: dict[str, float] = field(default_factory=dict)
    prompted_pref: dict[str, list[float]] = field(default_factory=dict)
    device: str | None = None
    dense_m: int = 0  # extra values of m each trial scores (0: none)
    m_range: dict[str, list[float]] = field(default_factory=dict)  # per form, from the space
    end_of_turn: bool = False  # score each completion with the turn's end (encode_pairs)
    per_token: bool = False  # score each completion by its mean NLL per token (evaluate)
    dtype: str = "auto"  # the model's, by name (load_model); auto: bf16 on a GPU worker
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    cache_gb: float | None = None  # a worker's cache budget; None: `default_cache_bytes`
    neutral_prompts: str | None = None  # kl's prompts file (absolute); None: the built-in set
    front_objectives: tuple[str, ...] = tuple(SEARCH["front_objectives"])  # axes.CHOICES
    max_kl: float = SEARCH["max_kl"]  # points above it are infeasible (never on the front)

    @property
    def axes(self) -> tuple[tuple[str, ...], float]:
        """The front's objectives and kl budget, as `best.front` and `best.pick` take them."""
        return tuple(self.front_objectives), self.max_kl

    @property
    def instruction(self) -> str:
        """The prompted baseline's instruction for this search's concept."""
        return prompting_instruction(self.concept)

    @property
    def dense_kl(self) -> bool:
        """Whether a trial scores kl at its dense values of m too (kl is an objective); else
        only at its own (about a seventh of the cost: bench/kl_cost.py), and a dense point
        gets its kl after the search, when it reaches the front (`worker.settle`)."""
        return "kl" in self.front_objectives

    @property
    def store(self) -> Store:
        return Store(self.storage, self.name)

    def share(self, device: torch.device) -> float:
        """A trial's share of its device: of the GPU, or of the machine's CPUs (and RAM)."""
        if device.type == "cuda":
            return min(1.0, self.gpus_per_trial)
        return min(1.0, self.cpus_per_trial / (os.cpu_count() or 1))

    def cache_bytes(self, device: torch.device) -> int:
        """A worker's cache budget on `device`."""
        if self.cache_gb is not None:
            return int(self.cache_gb * GB)
        return default_cache_bytes(device, self.share(device))

    def load(self) -> LM:
        """The model as a worker of this search holds it; on a GPU shared by several trials,
        PyTorch is held to the trial's share (a trial that outgrows it fails alone); on a CPU,
        the worker's batches are budgeted within its share of the free RAM."""
        device, _ = resolve(self.device, self.dtype)
        if device.type == "cuda" and self.share(device) < 1:
            torch.cuda.set_per_process_memory_fraction(self.share(device), device)
        if device.type == "cpu":  # trials side by side share the machine's free RAM
            set_cpu_share(self.share(device))
        return load_checked(self.model, device=device, dtype=self.dtype)

    def encode(self, lm: LM, pairs: PairSet) -> list[EncodedPair]:
        """Pairs as this search scores them."""
        return encode_pairs(lm.tokenizer, pairs, end_of_turn=self.end_of_turn)

    @property
    def size(self) -> int:
        """Characters of the scored pairs (each prompt once, as scoring shares it between the
        two completions): what this concept's model work costs, roughly, to hand a launch's
        costliest concepts out first (`worker.in_workers`, `FairShare`'s ties)."""
        splits = self.splits()
        return sum(
            len(p.prompt) + len(p.positive) + len(p.negative)
            for name in SCORED_SPLITS
            for p in getattr(splits, name)
        )

    def splits(self) -> Splits:
        pairs = load_concept(self.concept, self.fmt)
        return pairs.split(self.val_fraction, self.test_fraction, self.seed)


def asked_concept(concept: str) -> str:
    """The concept (a built-in name or a file) as an instruction asks for it
    (`defaults.concept_instruction`): a built-in concept's name (its own instructions), else
    the file's name in words."""
    return concept if concept in CONCEPT_INSTRUCTIONS else Path(concept).stem.replace("_", " ")


def prompting_instruction(concept: str) -> str:
    """What the prompted baseline adds to each prompt: the request to express the concept."""
    return concept_instruction(asked_concept(concept), "+")


_WORKER: dict = {}  # this process's model and cache, and each concept's pair sets, across trials


def worker_model(setup: SearchSetup) -> tuple[LM, MemoryCache, bool]:
    """The model as this worker process holds it (loaded once, whatever concepts and jobs it
    serves: a launch's concepts, the driver's model work), its cache, and whether the model
    was loaded for this call."""
    key = (setup.model, setup.device, setup.dtype, setup.cache_gb)
    loaded = _WORKER.get("key") != key
    if loaded:
        _WORKER.clear()  # the last model goes before this one loads
        lm = setup.load()
        cache = MemoryCache(setup.cache_bytes(lm.device))
        _WORKER.update(key=key, lm=lm, cache=cache, concepts={})
        release_unused()  # loading's buffers
    return _WORKER["lm"], _WORKER["cache"], loaded


def _worker(setup: SearchSetup) -> tuple[LM, Splits, dict, MemoryCache, bool]:
    """`worker_model`, with the concept's splits and encoded scored splits (kept per concept)."""
    lm, cache, loaded = worker_model(setup)
    concept = (
        setup.concept,
        setup.fmt,
        setup.val_fraction,
        setup.test_fraction,
        setup.seed,
        setup.end_of_turn,
    )
    if concept not in _WORKER["concepts"]:
        splits = setup.splits()
        encoded = {name: setup.encode(lm, getattr(splits, name)) for name in SCORED_SPLITS}
        _WORKER["concepts"][concept] = splits, encoded
    splits, encoded = _WORKER["concepts"][concept]
    return lm, splits, encoded, cache, loaded


def train_spec(config: dict, seed: int) -> TrainSpec:
    """The training part of a trial config: everything but `m`."""
    objective = Objective(
        config["objective"],
        **{k: config[k] for k in ("lambda_n", "gamma", "theta") if k in config},
    )
    return TrainSpec(
        form=config["form"],
        layer=int(config["layer"]),
        objective=objective,
        rank=int(config.get("rank", 4)),
        lr=config.get("lr"),
        steps=int(config.get("steps", TRAIN["steps"])),
        factors=tuple(config["factors"]) if config.get("factors") else None,
        seed=seed,
    )


def train_key(spec: TrainSpec, model: str, dataset: str) -> str:
    """Trials with the same key differ only in m and share one trained intervention."""
    text = json.dumps({**spec.describe(), "model": model, "dataset": dataset}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached(store: Store, key: str, required: bool = False) -> Path | None:
    """The local path of the trained intervention `key` in a search's cache (fetched from an
    object store if need be); None, or with `required` an error, if it was never trained."""
    path = store.local / "cache" / key
    names = (f"cache/{key}.json", f"cache/{key}.safetensors")  # tensors mark a whole entry
    if (store.local / names[1]).is_file() or store.pull(*names):
        return path
    if required:
        where = store.uri or store.local
        raise SteerfrontError(f"trained intervention {key} is missing from {where}/cache")
    return None


def obtain(
    lm: LM, splits: Splits, spec: TrainSpec, store: Store, node: str, memory: MemoryCache
) -> tuple[Intervention, bool]:
    """The intervention for `spec` and whether it was trained before: kept in this worker's
    `memory`, else from the search's cache, else freshly trained (on `node`) and stored
    there for every worker of the search, on any node."""
    key = train_key(spec, lm.spec, splits.train.fingerprint)
    trained = []

    def make() -> Intervention:
        path = cached(store, key)
        if path is not None:
            return load_intervention(path, lm)
        intervention = fit(lm, splits.train, spec)
        intervention.meta["node"] = node
        save_intervention(intervention, store.local / "cache" / key, lm)
        store.push(f"cache/{key}.json", f"cache/{key}.safetensors")
        trained.append(key)
        return intervention

    return memory.get(("intervention", key), make), not trained


def dense_grid(m: float, low: float, high: float, k: int) -> list[float]:
    """`k` values evenly spaced over a window of `DENSE_SPAN` of the range, centred on `m` and
    shifted to stay within [low, high]; `m` itself is left out (the trial scores it anyway)."""
    if k < 1 or low == high:
        return []
    width = DENSE_SPAN * (high - low)
    start = min(max(m - width / 2, low), high - width)
    return [float(v) for v in np.linspace(start, start + width, k) if v != m]


def run_trial(config: dict, setup: SearchSetup) -> dict:
    """Score one configuration; the metrics Tune and Optuna see (validation unprefixed), and
    the dense points (`dense_points`, JSON text)."""
    _inject_fault(config)
    lm, splits, encoded, cache, loaded = _worker(setup)
    spec = train_spec(config, setup.seed)
    node = ray.get_runtime_context().get_node_id()
    started = time.perf_counter()
    intervention, hit = obtain(lm, splits, spec, setup.store, node, cache)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    m = float(config["m"])
    low, high = setup.m_range.get(config["form"], (m, m))
    dense = dense_grid(m, low, high, setup.dense_m)
    val = score(lm, encoded["val"], intervention, [m, *dense], cache, setup, "val")
    test = score(lm, encoded["test"], intervention, [m], cache, setup, "test")
    answers = neutral_answers(lm, setup)
    kl_grid = [m, *dense] if setup.dense_kl else [m]
    kl = kl_scores(lm, intervention, kl_grid, answers, cache, KL_TOKENS).metrics(setup.seed)
    metrics = {**val.pop(m), **test[m], **kl[m]}
    for key in PER_PAIR:  # JSON text through Tune, as the dense points
        metrics[key] = json.dumps(metrics[key])
    metrics.update(
        dense_points=json.dumps([{"m": v, **val[v], **kl.get(v, {})} for v in dense]),
        train_s=train_s,
        eval_s=time.perf_counter() - started,
        cache_hit=int(hit),
        trained=int(not hit and spec.objective.trains),
        model_loaded=int(loaded),
        train_key=train_key(spec, lm.spec, splits.train.fingerprint),
        node=node,
        trained_on=intervention.meta.get("node", ""),
    )
    release_unused()  # a training's activations, freed but kept by the C heap
    return metrics


def neutral_answers(lm: LM, setup: SearchSetup) -> NeutralAnswers:
    """The unsteered model's answers to the search's neutral prompts, kept by this worker
    (and on disk, for every worker and search: `unsteered_answers`)."""
    key = ("neutral-answers", setup.neutral_prompts)
    if key not in _WORKER:
        prompts = neutral_prompts(setup.neutral_prompts, KL_PROMPTS)
        _WORKER[key] = unsteered_answers(lm, prompts, KL_NEW_TOKENS)
    return _WORKER[key]


def score(
    lm: LM,
    encoded: list,
    intervention: Intervention,
    grid: list[float],
    cache: MemoryCache,
    setup: SearchSetup,
    split: str,
) -> dict[float, dict[str, float]]:
    """Metrics per value of m on one split, named as in trials.parquet (test ones prefixed),
    on the setup's scale (`per_token`, as the baseline)."""
    scores = evaluate(lm, encoded, intervention, grid, setup.per_token, cache=cache)
    return point_metrics(scores, np.asarray(setup.baseline_util[split]), setup.seed, split)


def point_metrics(
    scores: LogOdds, base_util: np.ndarray, seed: int, split: str
) -> dict[float, dict[str, float]]:
    """Per m: mean pref_odds, util_odds, util_drop (against the unsteered model's per-pair
    utility `base_util`) with their bootstrap intervals (`_lo`, `_hi`), and accuracy; on test,
    also the per-pair pref_odds and util_odds (`PER_PAIR`), for the paired verdict."""
    prefix = "" if split == "val" else f"{split}_"
    grid = scores.m[: len(scores.m) // len(base_util)]  # rows are by pair, then m as given
    shape = (len(base_util), len(grid))
    pref, util = scores.pref.reshape(shape), scores.util.reshape(shape)
    columns = {"pref_odds": pref, "util_odds": util, "util_drop": base_util[:, None] - util}
    low, high = bootstrap_interval(np.concatenate(list(columns.values()), axis=1), seed)
    out = {}
    for j, m in enumerate(grid):
        metrics = {}
        for i, (name, values) in enumerate(columns.items()):
            metrics[f"{prefix}{name}"] = float(values[:, j].mean())
            metrics[f"{prefix}{name}_lo"] = float(low[i * len(grid) + j])
            metrics[f"{prefix}{name}_hi"] = float(high[i * len(grid) + j])
        metrics[f"{prefix}accuracy"] = float(scores.correct.reshape(shape)[:, j].mean())
        if split == "test":
            metrics["test_pref_pairs"] = pref[:, j].tolist()
            metrics["test_util_pairs"] = util[:, j].tolist()
        out[float(m)] = metrics
    return out


def score_test(rows: list[dict], setup: SearchSetup, lm: LM, cache: MemoryCache) -> None:
    """Fill in the test metrics of dense points (trials score those on validation only; the
    few that reach the extended front are worth the extra pass)."""
    todo = [r for r in rows if r.get("test_pref_odds") is None]
    if not todo:
        return
    encoded = setup.encode(lm, setup.splits().test)
    store = setup.store
    for key in sorted({r["train_key"] for r in todo}):
        group = [r for r in todo if r["train_key"] == key]
        intervention = load_intervention(cached(store, key, required=True), lm)
        grid = sorted({r["m"] for r in group})
        metrics = score(lm, encoded, intervention, grid, cache, setup, "test")
        for r in group:
            r.update(metrics[r["m"]])


def score_kl(rows: list[dict], setup: SearchSetup, lm: LM, cache: MemoryCache) -> None:
    """Fill in the kl of dense points (trials score kl at their own m only, unless kl decides
    the front: `SearchSetup.dense_kl`); `cache` keeps the neutral answers' unsteered states and
    frozen prefixes, which every concept shares, across calls."""
    todo = [r for r in rows if r.get("kl") is None]
    if not todo:
        return
    answers = neutral_answers(lm, setup)
    store = setup.store
    for key in sorted({r["train_key"] for r in todo}):
        group = [r for r in todo if r["train_key"] == key]
        intervention = load_intervention(cached(store, key, required=True), lm)
        grid = sorted({r["m"] for r in group})
        metrics = kl_scores(lm, intervention, grid, answers, cache, KL_TOKENS).metrics(setup.seed)
        for r in group:
            r.update(metrics[r["m"]])


def _inject_fault(config: dict) -> None:
    fault = os.environ.get(FAULT_ENV, "")
    kind, _, form = fault.partition(":")
    if fault and form in (config.get("form"), config.get("search")):
        if kind == "exit":
            os._exit(3)
        raise SteerfrontError(f"injected fault in a {form} trial ({FAULT_ENV}={fault})")
