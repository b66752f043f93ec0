"""The driver: Ray Tune runs the trials, Optuna picks them, MLflow and Parquet keep the results.

Optuna (through Ray's `OptunaSearch`) maximises two objectives, `pref_odds` and `util_odds`, on
the validation pairs. Test pairs are scored for every trial but never used for selection.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from ray.tune import Callback

from steerfront.data.prompts import neutral_prompts
from steerfront.defaults import LEARNING_RATE
from steerfront.errors import SteerfrontError
from steerfront.files import write_atomic
from steerfront.search.axes import MAXIMISED, feasible
from steerfront.search.best import front_volume, read_trials, volume_reference
from steerfront.search.records import PER_PAIR, RESULT_KEYS, write_table
from steerfront.search.report import RESULT_FILES, settle_searches, write_results
from steerfront.search.settings import STATE, SearchSettings
from steerfront.search.space import Sampler, SearchSpace, check_top, top_layers
from steerfront.search.storage import Store, is_uri
from steerfront.search.tracking import PARAMS, Tracker, prompted_metrics, tracking_uri
from steerfront.search.trial import SCORED_SPLITS, SearchSetup, run_trial
from steerfront.search.worker import Settled, in_workers, slots, unsteered


def run_search(space: SearchSpace, settings: SearchSettings, resume: bool = False) -> dict:
    """Run (or resume) a search to its trial budget; return its summary."""
    return drive(space, [settings], resume=resume)[0]


def drive(
    space: SearchSpace,
    searches: list[SearchSettings],
    experiment: Store | None = None,
    resume: bool = False,
    ready: Callable[[], str | None] | None = None,
) -> list[dict]:
    """Run (or resume) `searches` (one, or a launch's: one per concept, sharing the model,
    the space and how they run) in one Ray Tune experiment kept in `experiment` (default: the
    one search's own folder), each to its
    own trial budget, taking turns for the workers (`FairShare`); their summaries. A bad
    concept fails here, in one line, before Ray starts; `ready` (a launch's) is called once
    every search is checked and scored unsteered, before the first is written, and gives the
    MLflow run to nest them under."""
    first = searches[0]
    tracking_uri(first.tracking_uri, first.storage)  # an object store needs a server
    if first.address:
        _check_reachable(first.address)
    experiment = experiment or first.store
    states, setups = [], []
    for settings in searches:
        store = settings.store
        where = store.uri or settings.folder
        exists = store.pull(STATE)
        if resume and not exists:
            raise SteerfrontError(
                f"no search named {settings.name!r} in {settings.storage} to resume"
            )
        if not resume and exists:
            raise SteerfrontError(
                f"a search named {settings.name!r} exists in {where}; resume it with --resume "
                f"{experiment.name} or choose another --name"
            )
        state = None
        if resume:
            store.pull("trials.parquet")
            state = json.loads((settings.folder / STATE).read_text())
            setup = SearchSetup(**state["setup"])
        else:
            setup = new_setup(space, settings)  # a concept too small fails before Ray starts
        states.append(state)
        setups.append(setup)
    with ray_session(first.address):
        workers = first.concurrency or slots(first.resources)  # trials at once, and model work
        if resume:  # the sampler, prior included, comes back with Tune's saved searcher
            pairs = zip(setups, states, strict=True)
            prepared = [(setup, s["layers"], None, s.get("layer_prior")) for setup, s in pairs]
        else:  # a space the model cannot have, or a GPU share too small, fails here
            prepared = prepare(
                space, setups, first.resources, first.layer_prior, first.top_layers, workers
            )
            for settings in searches:
                if settings.store.uri:
                    shutil.rmtree(settings.folder, ignore_errors=True)  # a stale mirror
        launch_run_id = ready() if ready is not None else None
        recorders = [
            _start(space, settings, *ready, state, launch_run_id)
            for settings, ready, state in zip(searches, prepared, states, strict=True)
        ]
        interrupted = False
        try:
            _tune(space, recorders, experiment, resume, workers)
        except KeyboardInterrupt:
            interrupted = True
        jobs = [(r.records, r.search_setup, r.max_util_drop) for r in recorders]
        settled = settle_searches(jobs, first.resources, workers)
        summaries = [r.finish(done) for r, done in zip(recorders, settled, strict=True)]
        ended = list(zip(summaries, recorders, strict=True))
        if interrupted or any(s["trials"] < r.settings.trials for s, r in ended):
            kept = ", ".join(
                f"{r.settings.name} {s['trials']} of {r.settings.trials}" for s, r in ended
            )
            print(
                f"steerfront: search {experiment.name} stopped after {kept} trials (all kept); "
                f"continue it with: steerfront search --resume {experiment.name} --storage "
                f"{first.storage}",
                file=sys.stderr,
            )
        if interrupted:
            raise KeyboardInterrupt
        for settings, summary in zip(searches, summaries, strict=True):
            if settings.judge and summary["trials"] >= settings.trials:
                from steerfront.search.judge_settings import JudgeSettings
                from steerfront.search.judged import judge_search

                summary.update(judge_search(settings, JudgeSettings(**settings.judge)))
        return summaries


def _start(
    space: SearchSpace,
    settings: SearchSettings,
    setup: SearchSetup,
    layers: list[int],
    memory: dict[str, float] | None,
    prior: dict | None,
    state: dict | None,
    launch_run_id: str | None,
) -> Recorder:
    """One search set up to run, once its input is known to be good (`state`: a resumed
    search's; `memory` and `prior`: a new search's resolved memory settings and layer prior,
    as `prepare` gives them): its MLflow run, its state file, its recorder."""
    prior = prior or {"name": "none", "scores": {}}
    resume = state is not None
    store, folder = settings.store, settings.folder
    where = store.uri or folder
    store.check_writable()  # before any trial starts, not hours later
    if not settings.quiet:
        print(
            f"search {settings.name}: {settings.model}, concept {settings.concept}, "
            f"{settings.trials} trials, results in {where}",
            file=sys.stderr,
        )
    tracker = Tracker(
        settings.tracking,
        settings.name,
        state["parent_run_id"] if resume else None,
        artifact_root=folder.parent / "mlartifacts",
        launch_run_id=launch_run_id,
    )
    if not resume:
        folder.mkdir(parents=True, exist_ok=True)
        tracker.log_params(
            {
                "model": settings.model,
                "concept": settings.concept,
                "trials": settings.trials,
                "sampler": settings.sampler,
                "seed": settings.seed,
                "dense_m": settings.dense_m,
                "end_of_turn": settings.end_of_turn,
                "per_token": settings.per_token,
                "dtype": settings.dtype,
                "util_floor": settings.util_floor,
                "front_objectives": ",".join(settings.front_objectives),
                "max_kl": settings.max_kl,
                "layers": layers,
                "layer_prior": prior["name"],
                "top_layers": settings.top_layers,
                **(memory or {}),
                **setup.baseline,
            }
        )
        tracker.log_parent_metrics(prompted_metrics(setup.prompted))
        for layer, score in prior["scores"].items():  # a chart of the prior over the layers
            if math.isfinite(score):
                tracker.log_metric("layer_prior_score", score, step=layer)
        document = json.dumps(
            {
                "settings": asdict(settings),
                "space": space.model_dump(mode="json"),
                "setup": asdict(setup),
                "layers": layers,
                "layer_prior": prior,
                "parent_run_id": tracker.parent_run_id,
            },
            indent=2,
        )
        write_atomic(folder / STATE, document.encode())
        store.push(STATE)
    scores = {int(layer): score for layer, score in prior["scores"].items()}  # JSON: str keys
    weights = tuple(scores[layer] for layer in layers) if scores else None
    return Recorder(folder, tracker, setup, settings, layers, weights)


def new_setup(space: SearchSpace, settings: SearchSettings) -> SearchSetup:
    """What the trials share (no baseline yet); refuses a concept with an empty split."""
    concept = settings.concept
    if Path(concept).exists():
        concept = str(Path(concept).resolve())  # Tune changes each trial's working directory
    setup = SearchSetup(
        model=settings.model,
        concept=concept,
        fmt=settings.fmt,
        val_fraction=settings.val_fraction,
        test_fraction=settings.test_fraction,
        seed=settings.seed,
        storage=settings.storage if is_uri(settings.storage) else str(settings.folder.parent),
        name=settings.name,
        baseline={},
        dense_m=settings.dense_m,
        end_of_turn=settings.end_of_turn,
        per_token=settings.per_token,
        dtype=settings.dtype,
        m_range={form: list(space.m[form]) for form in space.forms},
        cpus_per_trial=settings.cpus_per_trial,
        gpus_per_trial=settings.gpus_per_trial,
        cache_gb=settings.cache_gb,
        neutral_prompts=_neutral_prompts(settings.neutral_prompts),
        front_objectives=tuple(settings.front_objectives),
        max_kl=settings.max_kl,
    )
    splits = setup.splits()
    for name in ("train", *SCORED_SPLITS):
        if len(getattr(splits, name)) == 0:
            raise SteerfrontError(f"concept {settings.concept!r}: no {name} pairs after the split")
    return setup


def _neutral_prompts(path: str | None) -> str | None:
    """The neutral prompts file, checked and absolute (Tune changes each trial's folder)."""
    if path is None:
        return None
    neutral_prompts(path)  # a bad file fails before Ray starts
    return str(Path(path).resolve())


def prepare(
    space: SearchSpace,
    setups: list[SearchSetup],
    resources: dict[str, float],
    layer_prior: str = "none",
    top: int | None = None,
    workers: int = 1,
) -> list[tuple[SearchSetup, list[int], dict[str, float], dict]]:
    """Check the space against the model and a trial's memory against its share, and score
    the unsteered and prompted models (and the layer prior) once, in up to `workers` Ray
    workers at once with a trial's `resources`, each loading the model once for its share of
    the setups (inside `ray_session`); per setup: the setup with its
    baselines, the layers (with `top`, only the prior's `top` best, ascending), the memory
    settings and the layer prior (`{"name", "scores": {layer: score}}`, every layer of the
    space scored)."""
    prepared = []
    sizes = [setup.size for setup in setups]
    done_all = in_workers(unsteered, resources, setups, workers, space, layer_prior, sizes=sizes)
    for setup, done in zip(setups, done_all, strict=True):
        layers = done.layers
        if top is not None:
            check_top(top, layers)
            layers = sorted(top_layers(layers, [done.prior[layer] for layer in layers], top))
        prior = {"name": layer_prior, "scores": done.prior}
        prepared.append((replace(setup, **done.baselines), layers, done.memory, prior))
    return prepared


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray for the whole search, from the unsteered scores to the written results; a local Ray
    started here is shut down on every way out."""
    import ray

    started = not address and not ray.is_initialized()
    _init_ray(address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _tune(
    space: SearchSpace,
    recorders: list[Recorder],
    experiment: Store,
    resume: bool,
    concurrency: int,
) -> None:
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from steerfront.search.samplers import ConstrainedOptunaSearch, FairShare, make_sampler

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress lines replace Tune's
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")  # state saved after every step
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def trainable(config: dict, setups: dict[str, SearchSetup]) -> None:
        # a search made before launches has no `search` in its configs: it is the only one
        setup = setups[config.get("search", next(iter(setups)))]
        # A trial kept before the driver died (but after Tune's last save) is not run again.
        kept = _kept_result(setup.store, tune.get_context().get_trial_id())
        if kept is not None:
            tune.report(kept)
            return
        try:
            tune.report(run_trial(config, setup))
        except Exception as exc:  # recorded as failed; only a dead worker is retried
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            failed = dict.fromkeys(("pref_odds", "util_odds", "kl"), math.nan)
            tune.report({**failed, "error": error})

    first = recorders[0].settings
    setups = {r.settings.name: r.search_setup for r in recorders}
    trainable = tune.with_resources(tune.with_parameters(trainable, setups=setups), first.resources)
    callback = Recorders(recorders)
    if resume:
        tuner = tune.Tuner.restore(
            experiment.uri or str(experiment.local), trainable, resume_errored=False
        )
        tuner._local_tuner._run_config.callbacks = [callback]  # callbacks are not restored
    else:
        searchers = {}
        # the costliest concept first: turns tied go to it, so that its last trials do not
        # run alone at the end while the other workers idle
        for recorder in sorted(recorders, key=lambda r: -r.search_setup.size):
            settings, setup = recorder.settings, recorder.search_setup
            sampler = Sampler(space, recorder.layers, recorder.prior)
            objectives = list(setup.front_objectives)
            searchers[settings.name] = ConstrainedOptunaSearch(
                sampler,
                points_to_evaluate=sampler.first_points(),
                metric=objectives,
                mode=["max" if MAXIMISED[name] else "min" for name in objectives],
                sampler=make_sampler(settings.sampler, settings.trials, settings.seed),
                max_kl=setup.max_kl,
            )
        budgets = {r.settings.name: r.settings.trials - len(r.records) for r in recorders}
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(
                    FairShare(searchers, budgets), max_concurrent=concurrency
                ),
                num_samples=sum(budgets.values()),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=experiment.name,
                storage_path=first.storage if experiment.uri else str(experiment.local.parent),
                callbacks=[callback],
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=first.retries),
                sync_config=tune.SyncConfig(sync_period=0),  # an object store: after every step
            ),
        )
    tuner.fit()


def _kept_result(store: Store, trial_id: str) -> dict | None:
    store.pull("trials.parquet")
    for record in read_trials(store.local):
        if record["trial_id"] == trial_id and record["status"] == "done":
            kept = {k: record[k] for k in RESULT_KEYS}
            kept.update({k: json.dumps(record[k]) for k in PER_PAIR})
            return {**kept, "dense_points": json.dumps(record["dense_points"] or [])}
    return None


def _init_ray(address: str | None) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}  # a bad space: one line
    if address:
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:  # Ray raises several types for a bad cluster
            raise SteerfrontError(f"Ray cluster at {address}: {str(exc).splitlines()[0]}") from None
    else:
        ray.init(
            address="local",  # a cluster of its own, even when another runs on this machine
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            **quiet,
        )


def _check_reachable(address: str) -> None:
    """Fail fast (seconds, not minutes of retries) when the cluster's address does not answer."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SteerfrontError(f"Ray address {address!r}: expected HOST:PORT (or ray://HOST:PORT)")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise SteerfrontError(
            f"Ray cluster at {address} is unreachable ({exc.strerror or exc})"
        ) from None


def _record(trial: object, status: str, max_kl: float) -> dict:
    config, result = trial.config, trial.last_result or {}
    if "error" in result:
        status = "failed"
    record = {"trial_id": trial.trial_id, "status": status}
    record.update({k: config.get(k) for k in PARAMS})
    if record["lr"] is None and record["objective"] != "diffmean":
        record["lr"] = LEARNING_RATE[record["form"]]  # the rate training used
    record["factors"] = json.dumps(config.get("factors"))
    if status == "done":
        record.update({k: v for k, v in result.items() if k in RESULT_KEYS})
        # JSON text through Tune: its TensorBoard logger would take a list for a histogram.
        record["dense_points"] = json.loads(result.get("dense_points") or "[]")
        record.update({k: json.loads(result.get(k) or "null") for k in PER_PAIR})
        record["feasible"] = feasible(record, max_kl)
    else:
        record["error"] = result.get("error") or _last_error_line(trial.error_file)
    return record


def _last_error_line(path: str | None) -> str:
    """The exception line of a failed trial's traceback (Tune writes it to the trial folder)."""
    text = Path(path).read_text() if path and Path(path).is_file() else ""
    lines = [
        line for line in text.splitlines() if line.strip() and not line.startswith("Failure #")
    ]
    return lines[-1].strip() if lines else "the trial's worker died without an error message"


class Recorder(Callback):
    """Keeps every finished or failed trial: Parquet first, then MLflow, then progress."""

    def __init__(
        self,
        folder: Path,
        tracker: Tracker,
        setup: SearchSetup,
        settings: SearchSettings,
        layers: list[int],
        prior: tuple[float, ...] | None,
    ) -> None:
        self.folder, self.tracker, self.search_setup, self.settings = (
            folder,
            tracker,
            setup,
            settings,
        )
        self.layers, self.prior = layers, prior  # the sampler's (a new search's)
        self.max_util_drop = settings.extra.get("max_util_drop", 1.0)
        self.records = read_trials(folder)
        self.axes = setup.axes
        self.reference = volume_reference(setup.baseline, settings.util_floor, *self.axes)
        self.started = time.monotonic()
        self.label = ""  # the search's name, when it runs beside others (`Recorders`)
        self.mlflow_ok = True
        self._sync_mlflow()

    def __getstate__(self) -> dict:  # Tune saves its callbacks; ours are re-attached on resume
        return {}

    def on_trial_complete(
        self, iteration: int, trials: list, trial: object, **info: object
    ) -> None:
        self._add(_record(trial, "done", self.search_setup.max_kl), trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: object, **info: object) -> None:
        self._add(_record(trial, "failed", self.search_setup.max_kl), trials, trial)

    def _add(self, record: dict, trials: list, trial: object) -> None:
        if any(r["trial_id"] == record["trial_id"] for r in self.records):
            return
        self.records.append(record)
        write_table(self.folder / "trials.parquet", self.records)
        self._push("trials.parquet")
        done = [r for r in self.records if r["status"] == "done"]
        volumes = {"hypervolume": front_volume(done, self.reference, False, *self.axes)}
        if self.search_setup.dense_m:
            volumes["hypervolume_extended"] = front_volume(done, self.reference, True, *self.axes)
        if self.mlflow_ok:  # once MLflow is down, catch up at the end (or on --resume)
            self._sync_mlflow()
            for key, value in volumes.items():
                self._safely(lambda k=key, v=value: self.tracker.log_metric(k, v, step=len(done)))
        if not self.settings.quiet:
            running = sum(1 for t in trials if t.status == "RUNNING" and t is not trial)
            failed = len(self.records) - len(done)
            over = sum(1 for r in done if r.get("feasible") is False)
            infeasible = f", {over} over --max-kl" if over else ""
            print(
                f"[{time.monotonic() - self.started:6.0f}s] {self.label}trials {len(self.records)}/"
                f"{self.settings.trials}: {len(done)} finished{infeasible}, {running} running, "
                f"{failed} failed; hypervolume {_volumes(volumes)}",
                file=sys.stderr,
                flush=True,
            )

    def _sync_mlflow(self) -> None:
        """Log every kept trial that MLflow lacks (after an outage or a resume)."""

        def sync() -> None:
            logged = self.tracker.logged_trials()
            for record in self.records:
                if record["trial_id"] not in logged:
                    self.tracker.log_trial(record)

        self._safely(sync)

    def _safely(self, action: Callable[[], None]) -> None:
        try:
            action()
            self.mlflow_ok = True
        except Exception as exc:
            if self.mlflow_ok:
                print(
                    f"steerfront: warning: MLflow unavailable ({str(exc).splitlines()[0][:200]}); "
                    "results are kept in trials.parquet and logged when it is back",
                    file=sys.stderr,
                )
            self.mlflow_ok = False

    def _push(self, *names: str) -> None:
        """Copy to the object store (if any); on failure everything stays in the local mirror
        and the next push (or --resume) catches up."""
        try:
            self.settings.store.push(*names)
        except SteerfrontError as exc:
            print(f"steerfront: warning: {exc}; kept in {self.folder}", file=sys.stderr)

    def finish(self, settled: Settled) -> dict:
        """The search's results, from the model's part of them (`settle_searches`)."""
        self._sync_mlflow()
        summary = write_results(
            self.folder,
            self.records,
            self.search_setup,
            self.tracker,
            self.max_util_drop,
            self.reference,
            settled,
        )
        summary["concept"] = self.settings.concept
        ranked = sorted(zip(self.prior, self.layers, strict=True)) if self.prior else []
        summary["prior_layer"] = ranked[-1][1] if ranked else None  # the prior's best layer
        self._push(*RESULT_FILES)
        return summary


class Recorders(Callback):
    """Routes each trial to its search's `Recorder` (by its config's `search`; a search made
    before launches has none: it is the only one)."""

    def __init__(self, recorders: list[Recorder]) -> None:
        self.by_name = {r.settings.name: r for r in recorders}
        if len(recorders) > 1:
            for name, recorder in self.by_name.items():
                recorder.label = f"{name}: "

    def __getstate__(self) -> dict:  # Tune saves its callbacks; ours are re-attached on resume
        return {}

    def _owner(self, trial: object) -> Recorder:
        return self.by_name[trial.config.get("search", next(iter(self.by_name)))]

    def on_trial_complete(
        self, iteration: int, trials: list, trial: object, **info: object
    ) -> None:
        self._owner(trial).on_trial_complete(iteration, trials, trial, **info)

    def on_trial_error(self, iteration: int, trials: list, trial: object, **info: object) -> None:
        self._owner(trial).on_trial_error(iteration, trials, trial, **info)


def _volumes(volumes: dict[str, float]) -> str:
    text = f"{volumes['hypervolume']:.3f}"
    if "hypervolume_extended" in volumes:
        text += f" (extended {volumes['hypervolume_extended']:.3f})"
    return text
