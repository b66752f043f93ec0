"""Judged generations: what the steered model writes at points of a search's front, how a
judge scores it, and whether the log-odds agree with the judge.

The unsteered model, the prompted one (asked in the prompt to express the concept) and up to
K points on and off the extended front answer the concept's test prompts (or a prompts file).
Points that share a trained intervention answer in one batch with a per-row `m`, in a Ray
worker with a trial's resources; the `local` judge scores there too, with the model it holds,
while the `llm` judge's requests go out from the driver.
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
from steerfront.search.trial import SearchSetup, asked_concept, cached


def generate_and_score(
    setup: SearchSetup,
    rows: list[dict],
    todo: list[int],
    settings: JudgeSettings,
    labelled: list[dict] | None = None,
) -> tuple[list[str], list[dict] | None, dict | None, list[dict] | None]:
    """In a worker: the texts of rows `todo` (one batch per trained intervention, per-row m;
    the prompted model's rows with its instruction in the prompt) and, for the local judge,
    every row's scores, the probe's held-out accuracy (`probe`) and its labelled examples
    (`labelled` when given: an earlier pass's, else generated)."""
    from steerfront.methods.generate import generate_rows
    from steerfront.methods.io import load_intervention

    lm = setup.load()
    texts = {}
    for key in dict.fromkeys(rows[i].get("train_key") for i in todo):
        group = [i for i in todo if rows[i].get("train_key") == key]
        intervention = (
            None if key is None else load_intervention(cached(setup.store, key, True), lm)
        )
        for sample in sorted({rows[i]["sample"] for i in group}):
            these = [i for i in group if rows[i]["sample"] == sample]
            answers = generate_rows(
                lm,
                [instructed(rows[i]["prompt"], rows[i].get("asked") or "") for i in these],
                intervention,
                [rows[i]["m"] for i in these],
                settings.max_new_tokens,
                settings.temperature,
                settings.seed + sample,
            )
            texts.update(zip(these, answers, strict=True))
    if settings.judge != "local":
        return [texts[i] for i in todo], None, None, None
    from steerfront.scoring.judge.local import LocalJudge, probe_examples

    train = setup.splits().train
    if labelled is None:
        concept = probe_concept(setup, settings)
        labelled = [
            {**e, "concept": concept} for e in probe_examples(lm, train, concept, setup.seed)
        ]
    judge = LocalJudge(lm, train, setup.seed, labelled)
    every = [texts.get(i, r.get("text")) for i, r in enumerate(rows)]
    scores = judge.score([(r["prompt"], text) for r, text in zip(rows, every, strict=True)])
    probe = {
        "accuracy": judge.probe_accuracy,
        "held_out": judge.probe_held_out,
        "on": judge.probe_on,
    }
    return [texts[i] for i in todo], scores, probe, labelled


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
    labelled = _read_examples(out / EXAMPLES, probe_concept(setup, judge))
    probe = None
    if todo or judge.judge == "local":
        from steerfront.search.worker import in_worker

        texts, scores, probe, labelled = in_worker(
            generate_and_score, settings.resources, setup, rows, todo, judge, labelled
        )
        if labelled is not None:
            write_rows(out / EXAMPLES, labelled)  # the probe's, for a later pass
            store.push(f"{FOLDER}/{EXAMPLES}")
        for i, text in zip(todo, texts, strict=True):
            rows[i]["text"] = text
        write_rows(out / "generations.parquet", rows)  # kept before they are judged
        store.push(f"{FOLDER}/generations.parquet")
    if judge.judge == "llm":
        try:
            scores, names = _llm_scores(rows, judge, setup, out)
        finally:  # the answers so far, for a pass finished from another machine
            store.push(f"{FOLDER}/answers.sqlite")
    else:
        from steerfront.scoring.judge.local import SCORES as names
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
