"""Judged generations: what the steered model writes at points of a search's front, how a
judge scores it, and whether the log-odds agree with the judge.

The unsteered model and up to K points spread along the extended front answer the concept's
test prompts (or a prompts file). Points that share a trained intervention answer in one
batch with a per-row `m`, in a Ray worker with a trial's resources; the `local` judge scores
there too, with the model it holds, while the `llm` judge's requests go out from the driver.
The texts are kept (`generations.parquet`) before they are judged, and the judge's answers as
they arrive, so a pass that stops is finished by running it again, without generating or
asking twice.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from steerfront.defaults import CONCEPT_TEXT, JUDGE, SEARCH
from steerfront.errors import SteerfrontError
from steerfront.files import write_atomic
from steerfront.scoring.judge import JUDGES
from steerfront.search.best import points, read_front, read_trials
from steerfront.search.records import typed
from steerfront.search.trial import SearchSetup, cached

if TYPE_CHECKING:
    from steerfront.search.run import SearchSettings

FOLDER = "judge"
FILES = ("generations.parquet", "judged.parquet", "judged.png", "judge.json")
POINT_FIELDS = ("point", "trial_id", "form", "objective", "layer", "m", "rank", "gamma")


@dataclass(frozen=True)
class JudgeSettings:
    """Which points, which prompts, how to generate, and which judge (the CLI's flags)."""

    judge: str = "local"
    points: int = JUDGE["points"]  # up to this many front points, besides the unsteered model
    chosen: str | None = None  # a points file or comma-separated trial ids instead
    prompts: str | None = None  # a JSONL file of instructions (default: the test prompts)
    samples: int = JUDGE["samples"]
    max_new_tokens: int = JUDGE["max_new_tokens"]
    temperature: float = JUDGE["temperature"]
    seed: int = 0
    url: str = JUDGE["url"]
    model: str = JUDGE["model"]
    key_env: str = JUDGE["key_env"]
    rubric: str = JUDGE["rubric"]
    concurrency: int = JUDGE["concurrency"]
    concept_text: str | None = None  # the concept in words, for the llm judge's questions
    generation: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.judge not in JUDGES:
            raise SteerfrontError(f"--judge {self.judge!r}: choose from {', '.join(JUDGES)}")
        for flag, value in (
            ("--judge-points", self.points),
            ("--samples", self.samples),
            ("--max-new-tokens", self.max_new_tokens),
            ("--judge-concurrency", self.concurrency),
        ):
            if value < 1:
                raise SteerfrontError(f"{flag} must be at least 1, not {value}")
        if not self.temperature >= 0:
            raise SteerfrontError(f"--temperature must be 0 or more, not {self.temperature}")
        keys = ("max_new_tokens", "temperature", "seed", "samples")
        object.__setattr__(self, "generation", {k: getattr(self, k) for k in keys})

    def check(self) -> JudgeSettings:
        """Refuse bad files and an endpoint that does not serve the model, in one line each and
        before anything runs; paths made absolute (the settings are kept with the search)."""
        prompts = str(Path(self.prompts).resolve()) if self.prompts else None
        if prompts:
            read_prompts(prompts)
        chosen = self.chosen
        if chosen and Path(chosen).is_file():
            chosen = str(Path(chosen).resolve())
            read_chosen(chosen)
        rubric = self.rubric
        if self.judge == "llm":
            from steerfront.scoring.judge.rubrics import RUBRICS, load_rubric

            load_rubric(rubric)
            rubric = rubric if rubric in RUBRICS else str(Path(rubric).resolve())
            self.endpoint().check()
        values = {k: v for k, v in asdict(self).items() if k != "generation"}
        return JudgeSettings(**{**values, "prompts": prompts, "chosen": chosen, "rubric": rubric})

    def endpoint(self) -> object:
        from steerfront.scoring.judge.llm import Endpoint

        return Endpoint(self.url, self.model, self.key_env, self.concurrency)

    @property
    def name(self) -> str:
        return "local" if self.judge == "local" else f"llm:{Path(self.rubric).stem}:{self.model}"

    def stored(self) -> dict:
        """What the search keeps of these settings (no key: only the variable's name)."""
        return {k: v for k, v in asdict(self).items() if k != "generation"}


def read_prompts(path: str) -> list[str]:
    """Instructions from a JSONL file: one object a line with `instruction` (AlpacaEval's
    field) or `prompt`; blank lines skipped."""
    prompts = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SteerfrontError(f"--prompts {path}: not readable ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SteerfrontError(f"--prompts {path}:{number}: invalid JSON ({exc.msg})") from None
        text = record.get("instruction", record.get("prompt")) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise SteerfrontError(
                f"--prompts {path}:{number}: expected an object with a non-empty "
                "'instruction' (or 'prompt') string"
            )
        prompts.append(text)
    if not prompts:
        raise SteerfrontError(f"--prompts {path}: no instructions in the file")
    return prompts


def read_chosen(spec: str) -> list[tuple[str, float | None]]:
    """(trial id, m or None for the trial's own) from a JSONL file of `{"trial_id": ...,
    "m": ...}` objects, or from comma-separated trial ids."""
    if not Path(spec).is_file():
        ids = [s.strip() for s in spec.split(",") if s.strip()]
        if not ids:
            raise SteerfrontError(f"--points {spec!r}: neither a file nor trial ids")
        return [(i, None) for i in ids]
    chosen = []
    for number, line in enumerate(Path(spec).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SteerfrontError(f"--points {spec}:{number}: invalid JSON ({exc.msg})") from None
        m = record.get("m") if isinstance(record, dict) else None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("trial_id"), str)
            or not (m is None or isinstance(m, int | float))
        ):
            raise SteerfrontError(
                f'--points {spec}:{number}: expected {{"trial_id": TEXT, "m": NUMBER}} '
                "(m optional: the trial's own)"
            )
        chosen.append((record["trial_id"], None if m is None else float(m)))
    if not chosen:
        raise SteerfrontError(f"--points {spec}: no points in the file")
    return chosen


def select_points(folder: Path, setup: SearchSetup, settings: JudgeSettings) -> list[dict]:
    """The unsteered model (point 0), then the chosen points or up to K points spread evenly
    along the extended front (its ends included), by pref_odds."""
    baseline = setup.baseline
    unsteered = {
        "point": 0,
        "m": 0.0,
        "pref_odds": baseline["val_pref_odds"],
        "util_odds": baseline["val_util_odds"],
        "test_pref_odds": baseline.get("test_pref_odds"),
        "test_util_odds": baseline.get("test_util_odds"),
    }
    if settings.chosen:
        done = [r for r in read_trials(folder) if r["status"] == "done"]
        rows = [typed(r) for r in points(done, extended=True)]
        front = {(r["trial_id"], r["m"]): r for r in read_front(folder, extended=True)}
        picked = []
        for trial_id, m in read_chosen(settings.chosen):
            mine = [r for r in rows if r["trial_id"] == trial_id]
            if not mine:
                raise SteerfrontError(f"--points: no finished trial {trial_id!r} in {folder}")
            m = next(r["m"] for r in mine if not r["dense"]) if m is None else m
            match = [r for r in mine if math.isclose(r["m"], m, rel_tol=0, abs_tol=1e-9)]
            if not match:
                scored = ", ".join(f"{r['m']:g}" for r in mine)
                raise SteerfrontError(
                    f"--points: trial {trial_id} was not scored at m = {m:g} (it was at {scored})"
                )
            picked.append(front.get((trial_id, match[0]["m"]), match[0]))
    else:
        front = read_front(folder, extended=True)
        index = np.unique(np.round(np.linspace(0, len(front) - 1, settings.points)).astype(int))
        picked = [front[i] for i in index] if front else []
    return [unsteered, *({**r, "point": i + 1} for i, r in enumerate(picked))]


def default_prompts(setup: SearchSetup) -> list[str]:
    """The concept's test prompts, each once (never the training ones)."""
    return list(dict.fromkeys(p.prompt for p in setup.splits().test))


def concept_text(setup: SearchSetup, settings: JudgeSettings) -> str:
    if settings.concept_text:
        return settings.concept_text
    name = Path(setup.concept).stem
    return CONCEPT_TEXT.get(setup.concept, name.replace("_", " "))


def generate_and_score(
    setup: SearchSetup, rows: list[dict], todo: list[int], settings: JudgeSettings
) -> tuple[list[str], list[dict] | None, float | None]:
    """In a worker: the texts of rows `todo` (one batch per trained intervention, per-row m)
    and, for the local judge, every row's scores and the probe's held-out accuracy."""
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
                [rows[i]["prompt"] for i in these],
                intervention,
                [rows[i]["m"] for i in these],
                settings.max_new_tokens,
                settings.temperature,
                settings.seed + sample,
            )
            texts.update(zip(these, answers, strict=True))
    if settings.judge != "local":
        return [texts[i] for i in todo], None, None
    from steerfront.scoring.judge.local import LocalJudge

    judge = LocalJudge(lm, setup.splits().train, setup.seed)
    every = [texts.get(i, r.get("text")) for i, r in enumerate(rows)]
    scores = judge.score([(r["prompt"], text) for r, text in zip(rows, every, strict=True)])
    return [texts[i] for i in todo], scores, judge.probe_accuracy


def judge_search(settings: SearchSettings, judge: JudgeSettings) -> dict:
    """Judge a finished search's points (or finish a pass that stopped): the files in
    `NAME/judge/`, MLflow, and the summary (`judge`, `judged`, `agreement`, ...). Runs inside
    `ray_session`; the model's work in a worker with a trial's resources."""
    from steerfront.search.run import STATE

    store, folder = settings.store, settings.folder
    state = json.loads((folder / STATE).read_text())
    setup = SearchSetup(**state["setup"])
    out = folder / FOLDER
    store.pull(f"{FOLDER}/generations.parquet", f"{FOLDER}/answers.sqlite")  # an earlier pass's
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
        print(
            f"judge {judge.name}: {len(selected) - 1} points and the unsteered model, "
            f"{len(prompts)} prompts x {judge.samples} samples; {len(todo)} generations to "
            f"make, {len(rows) - len(todo)} kept",
            file=sys.stderr,
            flush=True,
        )
    if judge.judge == "llm":  # before any generation: fail in seconds, not after minutes
        judge.endpoint().check()
    probe_accuracy = None
    if todo or judge.judge == "local":
        from steerfront.search.worker import in_worker

        texts, scores, probe_accuracy = in_worker(
            generate_and_score, settings.resources, setup, rows, todo, judge
        )
        for i, text in zip(todo, texts, strict=True):
            rows[i]["text"] = text
        _write_table(out / "generations.parquet", rows)  # kept before they are judged
        store.push(f"{FOLDER}/generations.parquet")
    if judge.judge == "llm":
        try:
            scores, names = _llm_scores(rows, judge, setup, out)
        finally:  # the answers so far, for a pass finished from another machine
            store.push(f"{FOLDER}/answers.sqlite")
    else:
        from steerfront.scoring.judge.local import SCORES as names
    for row, score in zip(rows, scores, strict=True):
        row.update(score, judge=judge.name, probe_accuracy=probe_accuracy)
    judged = aggregate(selected, rows, list(names), judge.name, probe_accuracy)
    agreement = agree(judged)
    _write_table(out / "generations.parquet", rows)
    _write_table(out / "judged.parquet", judged)
    plot_judged(read_front(folder, extended=True), judged, out / "judged.png")
    unparsed = sum(r.get("unparsed", 0) for r in judged)
    document = {
        "settings": judge.stored(),
        "agreement": agreement,
        "probe_accuracy": probe_accuracy,
        "unparsed": unparsed,
    }
    write_atomic(out / "judge.json", json.dumps(document, indent=2).encode())
    store.push(*(f"{FOLDER}/{name}" for name in FILES), f"{FOLDER}/answers.sqlite")
    _log_mlflow(settings, state, judged, rows, list(names), agreement, out)
    return {
        "judge": judge.name,
        "judged": [_summary(r, names) for r in judged],
        "agreement": agreement,
        "probe_accuracy": probe_accuracy,
        "unparsed": unparsed,
        "unparsed_example": next((_unparsed(r, names) for r in rows if _unparsed(r, names)), None),
        "examples": examples(rows, judged, names, _searched_pick(folder, settings)),
        "judge_folder": str(out),
    }


def _text_key(row: dict) -> tuple:
    keys = ("train_key", "m", "prompt", "sample", "max_new_tokens", "temperature", "seed")
    return tuple(row.get(k) for k in keys)


def _kept_texts(path: Path) -> dict[tuple, str]:
    """Texts a pass already generated, by point, prompt, sample and generation settings."""
    if not path.is_file():
        return {}
    import pyarrow.parquet as pq

    return {_text_key(r): r["text"] for r in pq.read_table(path).to_pylist()}


def _write_table(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))  # the unsteered row has fewer
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows]), sink)
    write_atomic(path, sink.getvalue().to_pybytes())


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


def aggregate(
    selected: list[dict],
    rows: list[dict],
    names: list[str],
    judge: str,
    probe_accuracy: float | None,
) -> list[dict]:
    """Per point: its record, and the mean and standard error of every score over its
    generations (`<score>`, `<score>_se`; unscored generations left out), with their count."""
    judged = []
    for point in selected:
        mine = [r for r in rows if r["point"] == point["point"]]
        record = {**typed(point), "judge": judge, "n": len(mine), "probe_accuracy": probe_accuracy}
        for name in names:
            values = np.array([r[name] for r in mine if r.get(name) is not None], dtype=float)
            record[name] = float(values.mean()) if len(values) else None
            se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else None
            record[f"{name}_se"] = None if se is None else float(se)
        record["unparsed"] = int(sum(r.get("unparsed", 0) for r in mine))
        judged.append(record)
    return judged


def agree(judged: list[dict]) -> dict[str, float | None]:
    """Spearman's rho over the judged points: pref_odds against the concept score, util_odds
    against fluency (None with fewer than three points, or where a judge has no such score)."""
    from scipy.stats import spearmanr

    out = {}
    for key, (odds, score) in {
        "pref_concept": ("pref_odds", "concept"),
        "util_fluency": ("util_odds", "fluency"),
    }.items():
        both = [(r[odds], r.get(score)) for r in judged if r.get(score) is not None]
        rho = math.nan
        if len(both) >= 3:
            with warnings.catch_warnings():  # a constant score: no rank correlation (None)
                warnings.simplefilter("ignore")
                rho = spearmanr(*np.array(both, dtype=float).T).statistic
        out[key] = None if not math.isfinite(rho) else float(rho)
    return out


def _summary(record: dict, names: list[str]) -> dict:
    keys = [*POINT_FIELDS, "pref_odds", "util_odds", "n", "probe_accuracy", "unparsed"]
    return {k: record.get(k) for k in [*keys, *names]}


def _unparsed(row: dict, names: list[str]) -> str | None:
    """The first answer in `row` that held no rating, if any."""
    missing = [n for n in names if f"{n}_answer" in row and row.get(n) is None]
    return row[f"{missing[0]}_answer"] if missing else None


def examples(
    rows: list[dict], judged: list[dict], names: list[str], searched: dict | None, count: int = 2
) -> dict:
    """The first `count` prompts' generations (sample 0), with their scores, of the unsteered
    model and of the picked point: the one `best --rule judged` picks, else (no judged point
    keeps enough fluency) the search's own pick `searched`, when it was judged."""
    from steerfront.search.best import pick_judged

    why = None
    try:
        picked, rule = pick_judged(judged), "judged"
    except SteerfrontError as err:
        same = [r for r in judged if searched and _same_point(r, searched)]
        picked, rule = (same[0], "max-pref") if same else (None, None)
        why = f"{err}; the search's own pick (best --rule max-pref) " + (
            "was not among the judged points" if searched else "is none"
        )
    if picked is None:
        return {"picked": None, "rule": None, "rows": [], "why": why}
    shown = []
    for prompt in list(dict.fromkeys(r["prompt"] for r in rows))[:count]:
        pair = {"prompt": prompt}
        for side, point in (("unsteered", 0), ("picked", picked["point"])):
            row = next(
                r for r in rows if r["point"] == point and r["prompt"] == prompt and not r["sample"]
            )
            pair[side] = {"text": row["text"], **{n: row.get(n) for n in names}}
        shown.append(pair)
    return {"picked": _summary(picked, names), "rule": rule, "rows": shown}


def _same_point(a: dict, b: dict) -> bool:
    return a.get("trial_id") == b.get("trial_id") and math.isclose(a["m"], b["m"], abs_tol=1e-9)


def _searched_pick(folder: Path, settings: SearchSettings) -> dict | None:
    """The point the search itself picks (`best`'s default rule), or None."""
    from steerfront.search.best import pick

    try:
        return pick(
            read_front(folder),
            max_util_drop=settings.extra.get("max_util_drop", SEARCH["max_util_drop"]),
        )
    except SteerfrontError:
        return None


def plot_judged(front: list[dict], judged: list[dict], path: Path) -> None:
    """The extended front, each judged point coloured by its judged fluency (grey where the
    judge gives none) with its concept score beside it, the unsteered model a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    if front:
        x, y = [r["pref_odds"] for r in front], [r["util_odds"] for r in front]
        ax.plot(x, y, "--", color="black", lw=1, label="extended front")
    fluency = [r.get("fluency") for r in judged]
    known = [f for f in fluency if f is not None]
    norm = matplotlib.colors.Normalize(min(known, default=0), max(known, default=1))
    for r, f in zip(judged, fluency, strict=True):
        colour = "lightgrey" if f is None else plt.cm.viridis(norm(f))
        marker, size = ("*", 260) if r["point"] == 0 else ("o", 90)
        ax.scatter([r["pref_odds"]], [r["util_odds"]], s=size, marker=marker, color=colour,
                   edgecolor="black", zorder=5)  # fmt: skip
        if r.get("concept") is not None:
            ax.annotate(f"{r['concept']:.2f}", (r["pref_odds"], r["util_odds"]), fontsize=8,
                        xytext=(6, 6), textcoords="offset points")  # fmt: skip
    if known:
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax)
        bar.set_label(f"judged fluency ({judged[0]['judge']})")
    ax.set_xlabel("pref_odds (validation)")
    ax.set_ylabel("util_odds (validation)")
    ax.set_title("judged points (star: unsteered; label: concept score)")
    if front:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _log_mlflow(
    settings: SearchSettings,
    state: dict,
    judged: list[dict],
    rows: list[dict],
    names: list[str],
    agreement: dict,
    out: Path,
) -> None:
    """`judge_*` metrics on each judged point's child run (the unsteered model's and the
    agreement on the parent), the generations as a table and the files on the parent. MLflow
    down: a warning, the files stay in the folder."""
    from steerfront.search.tracking import Tracker

    try:
        tracker = Tracker(settings.tracking, settings.name, state["parent_run_id"])
        for record in judged:
            keys = [*names, *(f"{n}_se" for n in names), "probe_accuracy"]
            metrics = {k: record[k] for k in keys if record.get(k) is not None}
            if record["point"] == 0:
                tracker.log_parent_metrics({f"judge_unsteered_{k}": v for k, v in metrics.items()})
            else:
                tracker.log_point(record, {f"judge_{k}": v for k, v in metrics.items()})
        tracker.log_parent_metrics(
            {f"judge_agreement_{k}": v for k, v in agreement.items() if v is not None}
        )
        columns = [k for k in rows[0] if k not in ("train_key", "trial_id")]
        tracker.log_table(
            {k: [r.get(k) for r in rows] for k in columns}, f"{FOLDER}/generations.json"
        )
        for name in FILES:
            tracker.log_artifact(out / name, FOLDER)
    except Exception as exc:  # any store or server failure
        print(
            f"steerfront: warning: judge results not logged to MLflow "
            f"({str(exc).splitlines()[0][:200]}); they are in {out}",
            file=sys.stderr,
        )
