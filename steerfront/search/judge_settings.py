"""A judge pass's settings: which points, which prompts, how to generate, which judge; checked
(bad files and an endpoint that does not serve the model refused in one line each) before
anything runs, and the prompts and points files they name read."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from steerfront.defaults import JUDGE
from steerfront.errors import SteerfrontError
from steerfront.scoring.judge import JUDGES

FOLDER = "judge"
FILES = ("generations.parquet", "judged.parquet", "judged.png", "judge.json")
EXAMPLES = "probe_examples.parquet"  # the local judge's labelled examples, generated once


@dataclass(frozen=True)
class JudgeSettings:
    """Which points, which prompts, how to generate, and which judge (the CLI's flags)."""

    judge: str = "local"
    points: int = JUDGE["points"]  # up to this many points on and off the front, and the unsteered
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
