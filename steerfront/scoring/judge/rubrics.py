"""Rubrics for the `llm` judge: what to ask about each generation and how to read the answer.

A rubric is a YAML file (the built-in `axbench` and `bipo` are such files in `rubrics/`):

    parse: rating        # rating: the number after the last "Rating:" ([[n]] brackets stripped)
                         # first: the first whole number within the scale in the answer's first
                         # line, a restated scale ("1 to 4", "1-4", "out of 4", "/4") skipped
    scale: [0, 2]        # ratings outside it count as unparsable
    combine: harmonic    # optional: also score the harmonic mean of all ratings (0 if any is 0)
    temperature: 0.7     # the judge's sampling temperature
    max_tokens: 256      # the longest answer asked for
    system: ...          # optional system message
    questions:           # one judge call per question; its name is the score's name
      concept: "... {concept} ... {generation} ..."

Placeholders: `{prompt}` (the instruction the model answered), `{generation}` (its answer,
required in every question) and `{concept}` (the concept in words). Any other `{name}` is
refused, so a misspelt placeholder is not sent to the judge as text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from steerfront.errors import SteerfrontError

RUBRICS = ("axbench", "bipo")
PLACEHOLDERS = ("prompt", "generation", "concept")
PARSERS = ("rating", "first")
_FIELDS = {"parse", "scale", "combine", "temperature", "max_tokens", "system", "questions"}
# A scale restated in an answer ("on a scale of 1 to 4", "1-4", "3 out of 4", "3/4"): its
# numbers are the scale's, not the rating.
_RESTATED_SCALE = re.compile(r"\d+\s*(?:-|–|to|and)\s*\d+|(?:out of|/)\s*\d+", re.IGNORECASE)


@dataclass(frozen=True)
class Rubric:
    """Questions to ask per generation, and how to read a rating from each answer."""

    name: str
    questions: dict[str, str]
    parse: str
    scale: tuple[float, float]
    combine: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    system: str | None = None

    @property
    def text(self) -> str:
        """Everything that decides an answer (a cached answer is reused only for the same)."""
        return yaml.safe_dump(
            {
                "questions": self.questions,
                "parse": self.parse,
                "system": self.system,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            },
            sort_keys=True,
        )

    @property
    def scores(self) -> list[str]:
        """The score names this rubric gives: one per question, and the combined one."""
        return [*self.questions, *([self.combine] if self.combine else [])]

    def messages(self, question: str, prompt: str, generation: str, concept: str) -> list[dict]:
        """The chat messages of one judge call."""
        values = {"prompt": prompt, "generation": generation, "concept": concept}
        text = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], self.questions[question])
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": text}]

    def rating(self, answer: str) -> float | None:
        """The rating in a judge's answer, or None when there is none within the scale."""
        low, high = self.scale
        if self.parse == "rating":
            if "Rating:" not in answer:
                return None
            text = answer.rsplit("Rating:", 1)[1].strip().strip("[]*. ").split("]")[0].strip()
            try:
                value = float(text)
            except ValueError:
                return None
        else:
            lines = answer.strip().splitlines()
            first = _RESTATED_SCALE.sub(" ", lines[0] if lines else "")
            found = [float(n) for n in re.findall(r"\d+", first)]
            value = next((n for n in found if low <= n <= high), None)
            if value is None:
                return None
        return value if low <= value <= high and math.isfinite(value) else None

    def combined(self, ratings: dict[str, float | None]) -> float | None:
        """The harmonic mean of the question ratings (0 if any is 0; None if any is missing)."""
        values = [ratings[q] for q in self.questions]
        if any(v is None for v in values):
            return None
        if any(v == 0 for v in values):
            return 0.0
        return len(values) / sum(1 / v for v in values)


def load_rubric(spec: str) -> Rubric:
    """A built-in rubric by name, or a rubric file; anything wrong is one line naming it."""
    if spec in RUBRICS:
        path = Path(str(resources.files("steerfront.scoring.judge") / "rubrics" / f"{spec}.yaml"))
    else:
        path = Path(spec)
        if not path.is_file():
            raise SteerfrontError(
                f"--rubric {spec}: not a built-in rubric ({', '.join(RUBRICS)}) nor a file"
            )
    where = f"--rubric {spec}" if spec in RUBRICS else f"rubric file {path}"
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SteerfrontError(f"{where}: not readable YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise SteerfrontError(f"{where}: expected a mapping with 'questions', 'parse', 'scale'")
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise SteerfrontError(f"{where}: unknown field {unknown[0]!r} (fields: {sorted(_FIELDS)})")
    questions = document.get("questions")
    if not isinstance(questions, dict) or not questions:
        raise SteerfrontError(f"{where}: 'questions' must map score names to question texts")
    for name, text in questions.items():
        if not isinstance(text, str):
            raise SteerfrontError(f"{where}: question {name!r} is not text")
        if "{generation}" not in text:
            raise SteerfrontError(
                f"{where}: question {name!r} lacks the {{generation}} placeholder"
            )
        for found in re.findall(r"\{(\w+)\}", text):
            if found not in PLACEHOLDERS:
                raise SteerfrontError(
                    f"{where}: question {name!r} has an unknown placeholder {{{found}}} "
                    f"(placeholders: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
                )
    parse = document.get("parse")
    if parse not in PARSERS:
        raise SteerfrontError(f"{where}: 'parse' must be one of {', '.join(PARSERS)}")
    scale = document.get("scale")
    if (
        not isinstance(scale, list)
        or len(scale) != 2
        or not all(isinstance(v, int | float) for v in scale)
        or not scale[0] < scale[1]
    ):
        raise SteerfrontError(f"{where}: 'scale' must be [low, high] with low < high")
    combine = document.get("combine")
    if combine not in (None, "harmonic"):
        raise SteerfrontError(f"{where}: 'combine' may only be 'harmonic'")
    try:
        temperature = float(document.get("temperature", 0.0))
        max_tokens = int(document.get("max_tokens", 256))
    except (TypeError, ValueError):
        raise SteerfrontError(f"{where}: 'temperature' and 'max_tokens' must be numbers") from None
    system = document.get("system")
    if system is not None and not isinstance(system, str):
        raise SteerfrontError(f"{where}: 'system' must be text")
    return Rubric(
        name=spec if spec in RUBRICS else str(path),
        questions={str(k): v for k, v in questions.items()},
        parse=parse,
        scale=(float(scale[0]), float(scale[1])),
        combine=combine,
        temperature=temperature,
        max_tokens=max_tokens,
        system=system,
    )
