"""`steerfront search`: the Pareto front of forms, layers, strengths and hyperparameters."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from steerfront.cli.args import (
    Top,
    add_concept,
    add_dtype,
    add_end_of_turn,
    add_judge,
    add_max_kl,
    add_model,
    add_neutral_prompts,
    add_output,
    add_per_token,
    add_tracking_uri,
    ints,
    judge_settings,
    layers_or_top,
    max_kl,
    words,
)
from steerfront.cli.checks import model_config
from steerfront.cli.report import describe, print_front, print_judged, print_report
from steerfront.defaults import CACHE_SHARE, DEFAULT_CONCEPT, LAYER_PRIORS, SEARCH, SEARCH_SPACE
from steerfront.errors import SteerfrontError
from steerfront.search.storage import Store, is_uri

if TYPE_CHECKING:
    from steerfront.search.settings import SearchSettings
    from steerfront.search.space import SearchSpace


def add(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search",
        help="search forms, layers, strengths and hyperparameters for the Pareto front",
        description="Ray Tune runs the trials, Optuna (two objectives: pref_odds and util_odds "
        "on validation pairs) picks them, MLflow tracks them. With no arguments: the embedded "
        "default (local Ray, the default model, a built-in concept, all three forms).",
    )
    add_model(search)
    add_dtype(search)
    add_concept(search, many=True)
    search.add_argument(
        "--concepts",
        metavar="FILE_OR_FOLDER",
        default=None,
        help="many concepts in one launch: a folder of concept files, a JSONL list (a line per "
        'concept: a JSON string or {"concept": ...}) or a parquet file with an '
        "output_concept (AxBench) or concept column; one search per concept, NAME-CONCEPT, "
        "each with --trials, and a report across them (steerfront report NAME) (default: "
        "none; --concept's)",
    )
    add_end_of_turn(search)
    add_per_token(search)
    search.add_argument(
        "--space",
        default=None,
        help="search-space YAML file (default: the built-in space; see README)",
    )
    search.add_argument(
        "--trials",
        type=int,
        default=SEARCH["trials"],
        help=f"trial budget (default: {SEARCH['trials']})",
    )
    search.add_argument(
        "--sampler",
        choices=("tpe", "nsga2", "random"),
        default=SEARCH["sampler"],
        help="Optuna sampler; nsga2 breeds generations of a quarter of the trials (4 to 50) "
        f"(default: {SEARCH['sampler']})",
    )
    search.add_argument(
        "--seed",
        type=int,
        default=SEARCH["seed"],
        help=f"seed of the sampler, the split and training (default: {SEARCH['seed']})",
    )
    search.add_argument(
        "--layers",
        type=layers_or_top,
        default=None,
        help="comma-separated layers, or top:K: the K best of the space's layers by "
        "--layer-prior (default: every third layer of the middle half)",
    )
    search.add_argument(
        "--layer-prior",
        choices=LAYER_PRIORS,
        default=None,
        help="score the layers before the first trial (navigator: LayerNavigator's d + c; "
        "lens: logit-lens alignment; see steerfront layers): the first trials take its 3 best "
        "layers and the sampler gives better layers more room (default: "
        f"{SEARCH['layer_prior']}; a resumed search keeps its own)",
    )
    search.add_argument(
        "--forms",
        type=words,
        default=None,
        help=f"comma-separated forms (default: {','.join(SEARCH_SPACE['forms'])})",
    )
    search.add_argument(
        "--objectives",
        type=words,
        default=None,
        help=f"comma-separated objectives (default: {','.join(SEARCH_SPACE['objectives'])})",
    )
    search.add_argument(
        "--steps",
        type=ints,
        default=None,
        help="comma-separated training budgets in optimizer steps "
        f"(default: {','.join(map(str, SEARCH_SPACE['steps']))})",
    )
    search.add_argument(
        "--name",
        default=None,
        help="search name (default: search-DATE-TIME; a launch's: launch-DATE-TIME)",
    )
    search.add_argument(
        "--resume",
        metavar="NAME",
        default=None,
        help="continue the search (or launch) NAME whose driver stopped (default: start a new "
        "search)",
    )
    search.add_argument(
        "--storage",
        default=SEARCH["storage"],
        help="folder for the search's results, Ray state and cache of trained interventions, "
        f"and the default MLflow store; a shared path (NFS) on a cluster "
        f"(default: {SEARCH['storage']})",
    )
    add_tracking_uri(search)
    search.add_argument(
        "--address",
        default=None,
        help="join this Ray cluster (default: RAY_ADDRESS, else start a local one)",
    )
    search.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="trials at once (default: as many as the resources allow)",
    )
    search.add_argument(
        "--retries",
        type=int,
        default=1,
        help="times a trial whose worker died is run again before it counts as failed (default: 1)",
    )
    search.add_argument(
        "--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default: 1)"
    )
    search.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="GPUs per trial, fractions allowed (default: 0)",
    )
    search.add_argument(
        "--cache-gb",
        type=float,
        default=None,
        help="memory each worker keeps frozen-prefix activations and trained interventions "
        f"in, least recently used dropped first (default: {CACHE_SHARE * 100:g}%% of the trial's "
        "share of its device's memory: of the GPU, or of the RAM by its share of the CPUs)",
    )
    search.add_argument(
        "--dense-m",
        type=int,
        default=SEARCH["dense_m"],
        metavar="K",
        help="each trial also scores K values of m around its own, in the same pass, for the "
        f"extended front; 0 turns this off (default: {SEARCH['dense_m']})",
    )
    search.add_argument(
        "--max-util-drop",
        type=float,
        default=SEARCH["max_util_drop"],
        help=f"best: most utility log-odds to give up (default: {SEARCH['max_util_drop']})",
    )
    search.add_argument(
        "--util-floor",
        type=float,
        default=SEARCH["util_floor"],
        metavar="DROP",
        help="hypervolume counts utility down to DROP log-odds below the unsteered model's; "
        "fixed before the first trial and recorded with the search "
        f"(default: {SEARCH['util_floor']})",
    )
    search.add_argument(
        "--front-objectives",
        default=",".join(SEARCH["front_objectives"]),
        metavar="A,B",
        help="the front's two objectives, of pref_odds and util_odds (maximised) and kl "
        "(minimised); Optuna searches on them (default: "
        f"{','.join(SEARCH['front_objectives'])})",
    )
    add_max_kl(search, f"{SEARCH['max_kl']:g}; inf: no constraint")
    add_neutral_prompts(search)
    add_judge(search, on_search=True)
    add_output(search, "the summary (last line)")
    search.set_defaults(run=run, parser=search)


def run(args: argparse.Namespace) -> None:
    import time

    from steerfront.search.axes import parse_objectives
    from steerfront.search.best import verdict
    from steerfront.search.run import run_search
    from steerfront.search.settings import SearchSettings
    from steerfront.search.space import load_space

    if args.trials < 1:
        raise SteerfrontError(f"--trials must be at least 1, not {args.trials}")
    top = args.layers.k if isinstance(args.layers, Top) else None
    concepts = list(args.concept or [])
    if args.concepts:
        from steerfront.data.concepts import concept_set

        concepts += concept_set(args.concepts)
    if args.resume and is_launch(args.storage, args.resume):
        return run_launch_command(args, None, None)
    launch = len(concepts) > 1 or bool(args.concepts)
    if launch and args.resume:
        raise SteerfrontError(f"--resume {args.resume}: a resumed search keeps its concepts")
    args.concept = concepts[0] if concepts else DEFAULT_CONCEPT
    if args.resume:
        settings, space = resumed(args)
    else:
        overrides = {
            "layers": None if top else args.layers,
            "forms": args.forms,
            "objectives": args.objectives,
            "steps": args.steps,
        }
        space = load_space(args.space, overrides)
        settings = SearchSettings(
            name=args.name
            or time.strftime("launch-%Y%m%d-%H%M%S" if launch else "search-%Y%m%d-%H%M%S"),
            model=args.model,
            dtype=args.dtype,
            concept=args.concept,
            fmt=args.format,
            trials=args.trials,
            sampler=args.sampler,
            seed=args.seed,
            concurrency=args.concurrency,
            cpus_per_trial=args.cpus_per_trial,
            retries=args.retries,
            gpus_per_trial=args.gpus_per_trial,
            dense_m=args.dense_m,
            cache_gb=args.cache_gb,
            util_floor=args.util_floor,
            front_objectives=parse_objectives(args.front_objectives),
            max_kl=max_kl(args.max_kl, SEARCH["max_kl"]),
            neutral_prompts=args.neutral_prompts,
            layer_prior=args.layer_prior or SEARCH["layer_prior"],
            top_layers=top,
            end_of_turn=args.end_of_turn,
            per_token=args.per_token,
            storage=args.storage,
            tracking_uri=args.tracking_uri,
            address=args.address or os.environ.get("RAY_ADDRESS"),
            quiet=args.quiet,
            extra={"max_util_drop": args.max_util_drop},
        )
        judge = judge_settings(args, args.seed)  # bad files or endpoint: before anything runs
        settings.judge = judge and judge.stored()
        if top is not None:
            check_top(top, space, settings.model)
        if launch:
            return run_launch_command(args, space, settings, concepts)
        new_folder(settings)
    summary = run_search(space, settings, resume=bool(args.resume))
    if args.json:
        print(json.dumps(summary, default=str))
        return
    print_front(summary["extended_front"], summary["baselines"])
    if summary["infeasible"]:
        print(f"{summary['infeasible']} trials over --max-kl {summary['max_kl']:g} (kept in "
              "trials.parquet, feasible false; never on the front)")  # fmt: skip
    extended = summary["hypervolume_extended"]
    print(
        f"{summary['trials']} trials ({summary['failed']} failed): "
        f"{summary['model_loads']} model loads, {summary['trainings']} trainings, "
        f"{summary['cache_hits']} cache hits; hypervolume {summary['hypervolume']:.3f}"
        + (f" (extended front {extended:.3f})" if extended != summary["hypervolume"] else "")
    )
    if summary["best"]:
        print(f"best: {describe(summary['best'])}")
        print(verdict(summary))
        if summary["exported"]:
            print(f"exported to {summary['exported']}/")
        else:
            print(
                f"nothing exported to {summary['folder']}/best/ (steerfront best "
                f"{summary['name']} --force exports it anyway)"
            )
    print(
        f"MLflow: {summary['mlflow_tracking_uri']} (parent run {summary['mlflow_parent_run_id']})"
    )
    if "judged" in summary:
        print()
        print_judged(summary)


def is_launch(storage: str, name: str) -> bool:
    from steerfront.search.launch import is_launch as kept

    return kept(storage, name)


def run_launch_command(
    args: argparse.Namespace,
    space: SearchSpace | None,
    settings: SearchSettings | None,
    concepts: list[str] | None = None,
) -> None:
    """A launch (`settings` as each concept's search, named NAME-CONCEPT), or with `--resume`
    the launch NAME resumed; prints its report."""
    from steerfront.search.launch import resume_launch, run_launch

    if args.resume:
        from functools import partial

        adjust = partial(resume_flags, args, f"launch {args.resume!r}")
        summary = resume_launch(args.storage, args.resume, adjust, args.quiet)
    else:
        from dataclasses import replace

        from steerfront.data.concepts import concept_label

        for concept in concepts:  # a search never writes among a user's files
            new_folder(replace(settings, name=f"{settings.name}-{concept_label(concept)}"))
        summary = run_launch(space, settings.name, settings, concepts)
    if args.json:
        print(json.dumps(summary, default=str))
        return
    print_report(summary)


def check_top(top: int, space: SearchSpace, model: str) -> None:
    """`--layers top:K` against the space's layers, from the model's configuration (before
    Ray starts)."""
    from steerfront.search.space import check_top as refuse_above
    from steerfront.search.space import default_layers

    refuse_above(top, space.layers or default_layers(model_config(model).num_hidden_layers))


def resumed(args: argparse.Namespace) -> tuple[SearchSettings, SearchSpace]:
    from steerfront.search.settings import STATE, SearchSettings
    from steerfront.search.space import SearchSpace

    store = Store(args.storage, args.resume)
    if not store.pull(STATE):
        raise SteerfrontError(f"no search named {args.resume!r} in {args.storage} to resume")
    state = json.loads((store.local / STATE).read_text())
    settings = SearchSettings(**{**state["settings"], "quiet": args.quiet})
    launch = settings.extra.get("launch")
    if launch:  # its trials live in the launch's Ray Tune experiment
        raise SteerfrontError(
            f"search {args.resume!r} is one of launch {launch!r}; resume it with --resume {launch}"
        )
    return resume_flags(args, f"search {args.resume!r}", settings), SearchSpace(**state["space"])


def resume_flags(args: argparse.Namespace, what: str, settings: SearchSettings) -> SearchSettings:
    """`settings` of a search resumed alone or in a launch (`what`: "search 'NAME'" or
    "launch 'NAME'", for errors) with what a resume may change
    (the cluster, the tracking server, the judge pass); a changed layer prior is refused
    (the sampler comes back with its own)."""
    top = args.layers.k if isinstance(args.layers, Top) else None
    given = {"--layer-prior": (args.layer_prior, settings.layer_prior)}
    given["--layers top:K"] = (top, settings.top_layers)
    for flag, (asked, kept) in given.items():
        if asked is not None and asked != kept:
            raise SteerfrontError(
                f"{flag}: {what} was started with {kept or 'none'}; a resumed "
                "search keeps its layer prior (start a new search to change it)"
            )
    settings.address = args.address or os.environ.get("RAY_ADDRESS")  # the cluster may be new
    settings.tracking_uri = args.tracking_uri or settings.tracking_uri
    if args.judge:  # a judge pass asked for now replaces the one recorded
        settings.judge = judge_settings(args, settings.seed).stored()
    elif settings.judge:  # the recorded one: its files and endpoint checked again
        from steerfront.search.judge_settings import JudgeSettings

        JudgeSettings(**settings.judge).check()
    return settings


def new_folder(settings: SearchSettings) -> None:
    """Refuse a local folder of that name that holds anything but a search (a search is
    refused with a hint to resume it, later): a search never writes among a user's files."""
    from steerfront.search.run import STATE

    folder = Path(settings.storage) / settings.name
    if is_uri(settings.storage) or not folder.is_dir() or (folder / STATE).exists():
        return
    held = sorted(p.name for p in folder.iterdir())
    if held:
        raise SteerfrontError(
            f"--name {settings.name}: {folder} exists and holds {', '.join(held[:3])}"
            f"{' and more' if len(held) > 3 else ''}, not a search; choose another --name"
        )
