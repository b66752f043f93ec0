"""Argument helpers the commands share (their printing is in `report`)."""

from __future__ import annotations

import argparse
import difflib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from steerfront.defaults import DEFAULT_CONCEPT, DEFAULT_MODEL, DTYPES, SEARCH
from steerfront.errors import SteerfrontError
from steerfront.search.storage import Store

if TYPE_CHECKING:
    from steerfront.search.judge_settings import JudgeSettings


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2, no usage block) that point to the help;
    flags are never abbreviated (a typo is an error, not another flag), and a value that
    starts with a negative number (`--m -1,0.5,2`) is a value, not a flag."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBERS

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def reject(self, extra: list[str]) -> None:
        """Unknown arguments, with the known flags nearest to the unknown ones."""
        known = [o for action in self._actions for o in action.option_strings if o[:2] == "--"]
        near = [
            match[0]
            for word in extra
            if word[:2] == "--"
            and (match := difflib.get_close_matches(word.split("=", 1)[0], known, n=1))
        ]
        hint = f"; did you mean {', '.join(dict.fromkeys(near))}?" if near else ""
        self.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


# A negative number, or a comma-separated list that starts with one: a value, never a flag.
NEGATIVE_NUMBERS = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?(,.*)?$")


def add_output(parser: argparse.ArgumentParser, what: str, progress: bool = True) -> None:
    """`--json` and `-q`, which every command takes."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress output" if progress else "no progress output (this command has none)",
    )


def add_model(parser: argparse.ArgumentParser, intervention: bool = False) -> None:
    """`--model`; where the command takes an intervention, it defaults to the intervention's."""
    default = f"the intervention's model, else {DEFAULT_MODEL}" if intervention else DEFAULT_MODEL
    parser.add_argument(
        "--model",
        default=None if intervention else DEFAULT_MODEL,
        help=f"built-in name, local folder or Hugging Face hub id (default: {default})",
    )


def intervention_model(path: str, sidecar: dict, model: str | None) -> str:
    """The model to steer with the intervention at `path`: the one it was made for. Another
    `--model` is refused: an intervention learnt on one model's activations means nothing on
    another, even one whose shapes fit."""
    made_for = sidecar.get("model") or DEFAULT_MODEL
    if model is None or model == made_for:
        return made_for
    if Path(model).expanduser().resolve() == Path(made_for).expanduser().resolve():
        return model  # the same folder, written another way
    raise SteerfrontError(
        f"--model {model}: {path} was made for model {made_for} (leave out --model to use it)"
    )


def add_dtype(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="the model's dtype; auto: bfloat16 on a GPU, float32 on a CPU (default: auto)",
    )


def add_concept(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """`--concept` (with `many`, repeatable: a launch, one search per concept) and `--format`."""
    if many:
        parser.add_argument(
            "--concept",
            action="append",
            default=None,
            help="built-in concept name or path to a concept file; give it again for more "
            f"concepts, searched in one launch (default: {DEFAULT_CONCEPT})",
        )
    else:
        parser.add_argument(
            "--concept",
            default=DEFAULT_CONCEPT,
            help=f"built-in concept name or path to a concept file (default: {DEFAULT_CONCEPT})",
        )
    add_format(parser)


def add_end_of_turn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--end-of-turn",
        action="store_true",
        help="score each completion with the chat template's end of turn after it, so an "
        "answer that would go on scores lower (default: the completion alone)",
    )


def add_per_token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--per-token",
        action="store_true",
        help="score each completion by its mean NLL per token, so long and short answers "
        "compare fairly on free text (Xu et al. 2026, §3; default: the NLL summed over its "
        "tokens)",
    )


def add_format(parser: argparse.ArgumentParser) -> None:
    from steerfront.data import FORMATS

    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="concept file format (default: detected from the file's extension and fields)",
    )


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///STORAGE/mlflow.db)",
    )


def add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=SEARCH["storage"],
        help=f"folder or object-store URI of searches (default: {SEARCH['storage']})",
    )


def add_finished_search(parser: argparse.ArgumentParser) -> None:
    """The arguments `front` and `best` share: which search, and which of its fronts."""
    parser.add_argument("search", help="search name (or its folder)")
    add_storage(parser)
    parser.add_argument(
        "--plain",
        action="store_true",
        help="the plain front (trials' own results) instead of the extended front "
        "(default: extended)",
    )


def add_neutral_prompts(parser: argparse.ArgumentParser) -> None:
    """`--neutral-prompts`: the prompts kl is measured on."""
    from steerfront.defaults import KL_PROMPTS

    parser.add_argument(
        "--neutral-prompts",
        metavar="FILE",
        default=None,
        help='neutral instructions kl is measured on: one a line, or .jsonl with a "prompt" '
        f"each; the first {KL_PROMPTS} are used (default: the built-in set)",
    )


def add_max_kl(parser: argparse.ArgumentParser, default: str) -> None:
    """`--max-kl`: the most kl (nats) a point may have and stay on the front."""
    parser.add_argument(
        "--max-kl",
        type=float,
        default=None,
        metavar="NATS",
        help="a point whose kl from the unsteered model is above NATS is infeasible: kept "
        f"and shown, never on the front nor picked (default: {default})",
    )


def max_kl(value: float | None, fallback: float) -> float:
    """`--max-kl` as given (checked), else `fallback`."""
    from steerfront.search.axes import check_max_kl

    return fallback if value is None else check_max_kl(value)


def ints(text: str) -> list[int]:
    try:
        return [int(x) for x in items(text, "integers")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}"
        ) from None


class Top(NamedTuple):
    """`--layers top:K`: the K best layers by the search's layer prior."""

    k: int


def layers_or_top(text: str) -> list[int] | Top:
    """`--layers`: comma-separated layers, or `top:K`."""
    if not text.startswith("top:"):
        return ints(text)
    k = text.removeprefix("top:")
    if not re.fullmatch(r"-?\d+", k):
        raise argparse.ArgumentTypeError(f"expected top:K with K a whole number, not {text!r}")
    if int(k) < 1:
        raise argparse.ArgumentTypeError(f"top:K needs K of at least 1, not {text!r}")
    return Top(int(k))


def words(text: str) -> list[str]:
    return items(text, "names")


def floats(text: str) -> list[float]:
    try:
        return [float(x) for x in items(text, "numbers")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, not {text!r}"
        ) from None


def items(text: str, kind: str) -> list[str]:
    """The comma-separated items of `text`; an empty one (`1,,2`, `1,2,`) is refused."""
    parts = [x.strip() for x in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated {kind}, not {text!r} (an item is empty)"
        )
    return parts


def per_form(values: dict) -> str:
    return ", ".join(f"{form} {value}" for form, value in values.items())


def search_store(search: str, storage: str) -> Store:
    """The search named on the command line (or given as a folder), its files at hand."""
    from steerfront.search.settings import STATE

    folder = Path(search)
    store = Store(str(folder.parent), folder.name) if folder.is_dir() else None
    store = store or Store(storage, search)
    store.pull(STATE, "trials.parquet", "front.parquet")
    if not (store.local / "trials.parquet").is_file():
        where = store.uri or store.local
        raise SteerfrontError(f"search {search!r}: no trials.parquet in {where}")
    return store


def search_state(store: Store) -> dict:
    """The search's settings and setup (with the unsteered model's scores), as it recorded them."""
    import json

    from steerfront.search.settings import STATE

    return json.loads((store.local / STATE).read_text())


def search_budget(state: dict, given: float | None) -> float:
    """`--max-util-drop` as given, else the search's own (what its `best/` was picked with)."""
    if given is not None:
        return given
    return state["settings"].get("extra", {}).get("max_util_drop", SEARCH["max_util_drop"])


def add_judge(parser: argparse.ArgumentParser, on_search: bool) -> None:
    """The judge pass's flags, the same on `judge` and `search --judge`."""
    from steerfront.defaults import JUDGE
    from steerfront.scoring.judge import JUDGES

    group = parser.add_argument_group("judged generations")
    group.add_argument(
        "--judge",
        choices=JUDGES,
        default=None if on_search else "local",
        help="local: the unsteered model's own measures and a concept probe (no network); llm: "
        "an OpenAI-compatible chat endpoint and a rubric "
        + ("(default: no judge pass)" if on_search else "(default: local)"),
    )
    group.add_argument(
        "--judge-points",
        type=int,
        default=JUDGE["points"],
        metavar="K",
        help="judge the unsteered model and up to K points on and off the extended front, "
        f"spanning the forms and m (default: {JUDGE['points']})",
    )
    group.add_argument(
        "--points",
        default=None,
        metavar="FILE|IDS",
        help="judge these points instead: comma-separated trial ids, or a JSONL file of "
        '{"trial_id": ..., "m": ...} (m optional; default: spread along the front)',
    )
    group.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="JSONL file of instructions ('instruction' or 'prompt' per line) "
        "(default: the concept's test prompts)",
    )
    group.add_argument(
        "--samples",
        type=int,
        default=JUDGE["samples"],
        help=f"generations per prompt and point (default: {JUDGE['samples']})",
    )
    group.add_argument(
        "--max-new-tokens",
        type=int,
        default=JUDGE["max_new_tokens"],
        help=f"generation length limit (default: {JUDGE['max_new_tokens']})",
    )
    group.add_argument(
        "--temperature",
        type=float,
        default=JUDGE["temperature"],
        help="sampling temperature, seeded; 0 is greedy (default: 0)",
    )
    group.add_argument(
        "--judge-url",
        default=os.environ.get("OPENAI_BASE_URL", JUDGE["url"]),
        help=f"llm: base URL of the endpoint (default: OPENAI_BASE_URL, else {JUDGE['url']})",
    )
    group.add_argument(
        "--judge-model",
        default=JUDGE["model"],
        help=f"llm: the judge model (default: {JUDGE['model']})",
    )
    group.add_argument(
        "--judge-key-env",
        default=JUDGE["key_env"],
        metavar="VAR",
        help="llm: the environment variable that holds the API key (never logged or written) "
        f"(default: {JUDGE['key_env']})",
    )
    group.add_argument(
        "--rubric",
        default=JUDGE["rubric"],
        help="llm: axbench (concept, instruction, fluency 0-2 and their harmonic mean), bipo "
        f"(power-seeking 1-4) or a rubric YAML file (default: {JUDGE['rubric']})",
    )
    group.add_argument(
        "--judge-concurrency",
        type=int,
        default=JUDGE["concurrency"],
        help=f"llm: requests at once (default: {JUDGE['concurrency']})",
    )
    group.add_argument(
        "--concept-text",
        default=None,
        help="llm: the concept in words for the rubric's questions (default: a built-in "
        "concept's description, else the concept file's name)",
    )


def judge_settings(args: argparse.Namespace, seed: int) -> JudgeSettings | None:
    """The judge pass the flags ask for (files and endpoint checked), or None."""
    from steerfront.search.judge_settings import JudgeSettings

    if args.judge is None:
        return None
    return JudgeSettings(
        judge=args.judge,
        points=args.judge_points,
        chosen=args.points,
        prompts=args.prompts,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=seed,
        url=args.judge_url,
        model=args.judge_model,
        key_env=args.judge_key_env,
        rubric=args.rubric,
        concurrency=args.judge_concurrency,
        concept_text=args.concept_text,
    ).check()
