"""Judged generations: what the steered model writes at points of a search's front, how a
judge scores it, and whether the log-odds agree with the judge.

The unsteered model, the prompted one (asked in the prompt to express the concept) and up to
K points on and off the extended front answer the concept's test prompts (or a prompts file).
Points that share a trained intervention answer in one batch with a per-row `m`; these jobs
are shared among as many Ray workers with a trial's resources as the cluster holds. The `local`
judge reads each text there too, with the model the worker holds, and its concept probe is
fitted where the readings are gathered; the `llm` judge's requests go out from the driver.
The texts are kept (`generations.parquet`) before they are judged, and the judge's answers as
they arrive, so a pass that stops is finished by running it again, without generating or
asking twice.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from steerfront.data import instructed
from steerfront.defaults import SEARCH
from steerfront.files import write_atomic
from steerfront.search.best import assess, baselines, read_front
from steerfront.search.judge_points import (
    BASELINES,
    POINT_FIELDS,
    concept_text,
    default_prompts,
    select_points,
)
from steerfront.search.judge_results import (
    aggregate,
    agree,
    examples,
    point_summary,
    searched_pick,
    unparsed_answer,
)
from steerfront.search.judge_settings import (
    EXAMPLES,
    FILES,
    FOLDER,
    JudgeSettings,
    read_prompts,
)
from steerfront.search.records import write_rows
from steerfront.search.report import plot_judged
from steerfront.search.settings import STATE, SearchSettings
from steerfront.search.tracking import log_judged
from steerfront.search.trial import SearchSetup, asked_concept, cached, worker_model

READ_TOKENS = 40  # on a CPU, reading a text as the local judge does costs about as much as
# generating 40 tokens (default model: 0.39 s a text, 0.01 s a token a row)


def generate_and_read(
    job: dict, setup: SearchSetup, rows: list[dict], settings: JudgeSettings
) -> dict:
    """In a worker, a job (`_jobs`): a group's texts of `rows` not yet generated (one batch
    per trained intervention and sample, per-row m; the prompted model's rows with its
    instruction in the prompt) and, for the local judge, what the model reads in every text
    of the group (`Reader.read`); or the probe's job: its labelled examples (generated unless
    an earlier pass's are given) and its inputs (`Reader.states`)."""
    from steerfront.methods.generate import generate_rows
    from steerfront.methods.io import load_intervention
    from steerfront.scoring.judge.local import Reader, probe_examples

    lm, _, _ = worker_model(setup)
    reader = Reader(lm) if settings.judge == "local" else None
    if "concept" in job:  # the probe's
        train = setup.splits().train
        labelled = job["labelled"] or [
            {**e, "concept": job["concept"]}
            for e in probe_examples(lm, train, job["concept"], setup.seed)
        ]
        return {"labelled": labelled, "states": reader.states(train, labelled)}
    key, todo = job["train_key"], [i for i in job["rows"] if rows[i]["text"] is None]
    texts = {i: rows[i]["text"] for i in job["rows"]}
    if todo:
        intervention = (
            None if key is None else load_intervention(cached(setup.store, key, True), lm)
        )
        texts.update(
            zip(
                todo,
                generate_rows(
                    lm,
                    [instructed(rows[i]["prompt"], rows[i].get("asked") or "") for i in todo],
                    intervention,
                    [rows[i]["m"] for i in todo],
                    settings.max_new_tokens,
                    settings.temperature,
                    settings.seed + job["sample"],
                ),
                strict=True,
            )
        )
    readings = None
    if reader is not None:
        readings = reader.read([(rows[i]["prompt"], texts[i]) for i in job["rows"]])
    return {"texts": [texts[i] for i in todo], "readings": readings}


def _jobs(
    rows: list[dict],
    settings: JudgeSettings,
    labelled: list[dict] | None,
    concept: str,
    train_pairs: int,
) -> tuple[list[dict], list[float]]:
    """The pass's model work as jobs for `generate_and_read`, and their expected costs (in
    texts read; generating a text costs its new tokens over `READ_TOKENS` more): a job per
    trained intervention and sample with texts to generate or (local judge) to read, and for
    the local judge the probe's (its examples' texts and the training completions, read up
    to the probe layer: a quarter of a judged text each)."""
    local = settings.judge == "local"
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        if local or row["text"] is None:
            groups.setdefault((row.get("train_key"), row["sample"]), []).append(i)
    jobs = [{"train_key": k, "sample": s, "rows": these} for (k, s), these in groups.items()]
    made = settings.max_new_tokens / READ_TOKENS
    sizes = [sum(made * (rows[i]["text"] is None) + local for i in job["rows"]) for job in jobs]
    if local:
        from steerfront.scoring.judge.local import PROBE_NEW_TOKENS, PROBE_PROMPTS

        examples = 2 * PROBE_PROMPTS
        jobs.append({"concept": concept, "labelled": labelled})
        made = 0 if labelled else examples * PROBE_NEW_TOKENS / READ_TOKENS
        sizes.append(made + (2 * train_pairs + examples) / 4)
    return jobs, sizes


def _run_jobs(
    jobs: list[dict],
    sizes: list[float],
    settings: SearchSettings,
    setup: SearchSetup,
    rows: list[dict],
    judge: JudgeSettings,
) -> tuple[list[dict | None], tuple[list[dict], object] | None]:
    """`jobs` shared among as many workers as the cluster holds at once: the texts they
    generated go into `rows`; back come each row's reading (local judge) and the probe's
    labelled examples and inputs (local judge; else None)."""
    from steerfront.search.worker import in_workers, slots

    readings: list[dict | None] = [None] * len(rows)
    probe_inputs = None
    if not jobs:
        return readings, probe_inputs
    workers = slots(settings.resources)
    args = (setup, rows, judge)
    done = in_workers(generate_and_read, settings.resources, jobs, workers, *args, sizes=sizes)
    for job, result in zip(jobs, done, strict=True):
        if "concept" in job:
            probe_inputs = result["labelled"], result["states"]
            continue
        todo = [i for i in job["rows"] if rows[i]["text"] is None]
        for i, text in zip(todo, result["texts"], strict=True):
            rows[i]["text"] = text
        if result["readings"] is not None:
            for i, reading in zip(job["rows"], result["readings"], strict=True):
                readings[i] = reading
    return readings, probe_inputs


def probe_concept(setup: SearchSetup, settings: JudgeSettings) -> str:
    """What the probe's examples are asked to express: `--concept-text`, else what the
    prompted baseline asks for (`trial.asked_concept`)."""
    return settings.concept_text or asked_concept(setup.concept)


def judge_search(settings: SearchSettings, judge: JudgeSettings) -> dict:
    """Judge a finished search's points (or finish a pass that stopped): the files in
    `NAME/judge/`, MLflow, and the summary (`judge`, `judged`, `agreement`, ...). Runs inside
    `ray_session`; the model's work in a worker with a trial's resources."""
    store, folder = settings.store, settings.folder
    state = json.loads((folder / STATE).read_text())
    setup = SearchSetup(**state["setup"])
    out = folder / FOLDER
    store.pull(  # an earlier pass's
        f"{FOLDER}/generations.parquet", f"{FOLDER}/answers.sqlite", f"{FOLDER}/{EXAMPLES}"
    )
    selected = select_points(folder, setup, judge)
    prompts = read_prompts(judge.prompts) if judge.prompts else default_prompts(setup)
    rows = [
        {
            **{k: point.get(k) for k in POINT_FIELDS},
            "train_key": point.get("train_key"),
            "prompt": prompt,
            "sample": sample,
            **{k: v for k, v in judge.generation.items() if k != "samples"},
        }
        for point in selected
        for prompt in prompts
        for sample in range(judge.samples)
    ]
    kept = _kept_texts(out / "generations.parquet")
    for row in rows:
        row["text"] = kept.get(_text_key(row))
    todo = [i for i, row in enumerate(rows) if row["text"] is None]
    if not settings.quiet:
        names = [BASELINES[p["point"]] for p in selected if p["point"] <= 0]
        print(
            f"judge {judge.name}: {sum(p['point'] > 0 for p in selected)} points and the "
            f"{' and '.join(names)} model{'s' if len(names) > 1 else ''}, "
            f"{len(prompts)} prompts x {judge.samples} samples; {len(todo)} generations to "
            f"make, {len(rows) - len(todo)} kept",
            file=sys.stderr,
            flush=True,
        )
    if judge.judge == "llm":  # before any generation: fail in seconds, not after minutes
        judge.endpoint().check()
    concept = probe_concept(setup, judge)
    labelled = _read_examples(out / EXAMPLES, concept)
    jobs, sizes = _jobs(rows, judge, labelled, concept, len(setup.splits().train))
    readings, probe_inputs = _run_jobs(jobs, sizes, settings, setup, rows, judge)
    if jobs:
        write_rows(out / "generations.parquet", rows)  # kept before they are judged
        store.push(f"{FOLDER}/generations.parquet")
    probe = None
    if judge.judge == "llm":
        try:
            scores, names = _llm_scores(rows, judge, setup, out)
        finally:  # the answers so far, for a pass finished from another machine
            store.push(f"{FOLDER}/answers.sqlite")
    else:
        from steerfront.scoring.judge.local import SCORES as names
        from steerfront.scoring.judge.local import fit_probe, with_concept

        labelled, states = probe_inputs
        write_rows(out / EXAMPLES, labelled)  # the probe's, for a later pass
        store.push(f"{FOLDER}/{EXAMPLES}")
        fitted = fit_probe(setup.splits().train, labelled, states, setup.seed)
        scores = with_concept(readings, fitted)
        probe = {"accuracy": fitted.accuracy, "held_out": fitted.held_out, "on": fitted.on}
    probe_accuracy = None if probe is None else probe["accuracy"]
    for row, score in zip(rows, scores, strict=True):
        row.update(score, judge=judge.name, probe_accuracy=probe_accuracy)
    judged = aggregate(selected, rows, list(names), judge.name, probe_accuracy)
    agreement = agree([r for r in judged if r["point"] >= 0])  # prompting is not steering
    write_rows(out / "generations.parquet", rows)
    write_rows(out / "judged.parquet", judged)
    plot_judged(read_front(folder, extended=True), judged, out / "judged.png")
    unparsed = sum(r.get("unparsed", 0) for r in judged)
    document = {
        "settings": judge.stored(),
        "agreement": agreement,
        "probe_accuracy": probe_accuracy,
        "probe": probe,
        "unparsed": unparsed,
    }
    write_atomic(out / "judge.json", json.dumps(document, indent=2).encode())
    store.push(*(f"{FOLDER}/{name}" for name in FILES), f"{FOLDER}/answers.sqlite")
    tracked = (settings.tracking, settings.name, state["parent_run_id"])
    log_judged(*tracked, judged, rows, list(names), agreement, out, FOLDER, FILES)
    shown = examples(rows, judged, names, searched_pick(folder, settings), settings.max_kl)
    return {
        "judge": judge.name,
        "judged": [point_summary(r, names) for r in judged],
        "baselines": baselines(state["setup"]),
        "agreement": agreement,
        "probe_accuracy": probe_accuracy,
        "probe": probe,
        "judge_warnings": judge_warnings(probe_accuracy),
        "unparsed": unparsed,
        "unparsed_example": next(
            (unparsed_answer(r, names) for r in rows if unparsed_answer(r, names)), None
        ),
        "examples": shown,
        "verdict": _verdict(shown, judged, state["setup"], settings),
        "judge_folder": str(out),
    }


def _verdict(shown: dict, judged: list[dict], setup: dict, settings: SearchSettings) -> dict | None:
    """The picked point's verdict against the unsteered model, as `best` gives it (the same
    paired test and the search's own utility budget); None when nothing was picked."""
    if shown["picked"] is None:
        return None
    record = next(r for r in judged if r["point"] == shown["picked"]["point"])
    return assess(record, setup, settings.extra.get("max_util_drop", SEARCH["max_util_drop"]))


def judge_warnings(probe_accuracy: float | None) -> list[str]:
    """What a reader of the pass's results should be warned of (printed and in `--json`)."""
    from steerfront.scoring.judge.local import PROBE_WARNING

    if probe_accuracy is not None and probe_accuracy < PROBE_WARNING:
        return [
            f"the concept probe is below {PROBE_WARNING:g} accuracy on held-out generations "
            "(for prompts not used to fit it): read its concept scores with care"
        ]
    return []


def _read_examples(path: Path, concept: str) -> list[dict] | None:
    """The probe's labelled examples an earlier pass generated for the same concept, if any."""
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    kept = pq.read_table(path).to_pylist()
    return kept if all(e.get("concept") == concept for e in kept) else None


def _text_key(row: dict) -> tuple:
    keys = ("train_key", "m", "asked", "prompt", "sample")
    keys += ("max_new_tokens", "temperature", "seed")
    return tuple(row.get(k) for k in keys)


def _kept_texts(path: Path) -> dict[tuple, str]:
    """Texts a pass already generated, by point, prompt, sample and generation settings."""
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    return {_text_key(r): r["text"] for r in pq.read_table(path).to_pylist()}


def _llm_scores(
    rows: list[dict], judge: JudgeSettings, setup: SearchSetup, out: Path
) -> tuple[list[dict], list[str]]:
    from steerfront.scoring.judge.llm import AnswerCache, LLMJudge
    from steerfront.scoring.judge.rubrics import load_rubric

    rubric = load_rubric(judge.rubric)
    cache = AnswerCache(out / "answers.sqlite")
    try:
        llm = LLMJudge(rubric, judge.endpoint(), cache, concept_text(setup, judge))
        scores = llm.score([(r["prompt"], r["text"]) for r in rows])
    finally:
        cache.close()
    for score in scores:
        score["unparsed"] = sum(score[q] is None for q in rubric.questions)
    return scores, rubric.scores
