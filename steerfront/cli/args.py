"""Argument helpers and printers the commands share."""

from __future__ import annotations

import argparse
import difflib
import itertools
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from steerfront.defaults import DEFAULT_CONCEPT, DEFAULT_MODEL, DTYPES, SEARCH
from steerfront.errors import SteerfrontError
from steerfront.search.storage import Store

if TYPE_CHECKING:
    from steerfront.search.judged import JudgeSettings


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


def add_concept(parser: argparse.ArgumentParser) -> None:
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


def ints(text: str) -> list[int]:
    try:
        return [int(x) for x in items(text, "integers")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}"
        ) from None


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
    from steerfront.search.run import STATE

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

    from steerfront.search.run import STATE

    return json.loads((store.local / STATE).read_text())


def describe(record: dict) -> str:
    parts = [
        f"{record['form']} {record['objective']} layer {int(record['layer'])} m {record['m']:.3g}"
    ]
    if record.get("rank") is not None:
        parts.append(f"rank {int(record['rank'])}")
    if record.get("gamma") is not None:
        parts.append(f"gamma {record['gamma']:.3g}")
    parts.append(
        f"pref_odds {record['pref_odds']:.3f} util_odds {record['util_odds']:.3f} "
        f"(test {cell(record.get('test_pref_odds'))} / {cell(record.get('test_util_odds'))})"
    )
    return ", ".join(parts)


def print_front(rows: list[dict], baseline: dict) -> None:
    """The unsteered model, then one line per front point, numbered from 1 as `export --point`
    counts (`dense`: a point of the extended front that is not a trial's own result); log-odds
    with their 95% intervals."""
    narrow = ("point", "form", "objective", "layer", "m", "rank", "gamma")
    wide = ("pref val", "util val", "drop val", "pref test", "util test")
    print(" ".join(f"{h:>12}" for h in narrow) + " " + " ".join(f"{h:>21}" for h in wide))
    scores = ("pref_odds", "util_odds", "util_drop", "test_pref_odds", "test_util_odds")
    unsteered = {
        "point": "unsteered",
        "pref_odds": baseline.get("val_pref_odds"),
        "util_odds": baseline.get("val_util_odds"),
        "util_drop": 0.0,
        **{f"pref_odds{e}": baseline.get(f"val_pref_odds{e}") for e in ("_lo", "_hi")},
        **{f"util_odds{e}": baseline.get(f"val_util_odds{e}") for e in ("_lo", "_hi")},
        **{k: v for k, v in baseline.items() if k.startswith("test_")},
    }
    for number, r in enumerate([unsteered, *rows]):  # numbered as `export --point` counts
        point = r.get("point") or f"{number} {'dense' if r.get('dense') else 'trial'}"
        cells = [point, r.get("form"), r.get("objective"), r.get("layer"), r.get("m")]
        cells += [r.get("rank"), r.get("gamma")]
        line = " ".join(f"{cell(c):>12}" for c in cells)
        print(line + " " + " ".join(f"{interval(r, k):>21}" for k in scores))


def interval(record: dict, key: str) -> str:
    """`mean [low, high]`, or the mean alone where the interval is not known."""
    low, high = record.get(f"{key}_lo"), record.get(f"{key}_hi")
    if low is None or high is None:
        return cell(record.get(key))
    return f"{record[key]:.3f} [{low:.2f},{high:.2f}]"


def cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3f}"
    return str(value)


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
        help="judge the unsteered model and up to K points spread along the extended front "
        f"(default: {JUDGE['points']})",
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
    from steerfront.search.judged import JudgeSettings

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


def print_judged(summary: dict) -> None:
    """The judged points below the unsteered model, the agreement of log-odds with the judge,
    and two generations of the picked point beside the unsteered model's."""
    judged = summary["judged"]
    names = [k for k in judged[0] if k not in _JUDGED_FIELDS]
    head = ("point", "form", "objective", "layer", "m", "pref val", "util val")
    print(" ".join(f"{h:>12}" for h in (*head, *names)))
    for r in judged:
        cells = ["unsteered" if r["point"] == 0 else r["point"], r["form"], r["objective"]]
        cells += [r["layer"], r["m"], r["pref_odds"], r["util_odds"], *(r[n] for n in names)]
        print(" ".join(f"{cell(c):>12}" for c in cells))
    accuracy = summary.get("probe_accuracy")
    if accuracy is not None:
        print(f"concept probe: held-out accuracy {accuracy:.2f}")
        if accuracy < 0.8:
            print(
                "steerfront: warning: the concept probe is below 0.8 accuracy on held-out "
                "training pairs: read its concept scores with care",
                file=sys.stderr,
            )
    if summary.get("unparsed"):
        print(
            f"{summary['unparsed']} judge answers held no rating (kept in generations.parquet, "
            f"columns *_answer; not scored), e.g.: {summary['unparsed_example'][:200]!r}"
        )
    agreement = summary["agreement"]
    print(
        f"agreement over {len(judged)} judged points (Spearman's rho): pref_odds vs concept "
        f"{cell(agreement['pref_concept'])}, util_odds vs fluency {cell(agreement['util_fluency'])}"
    )
    shown = summary["examples"]
    if shown["picked"] is not None:
        p = shown["picked"]
        why = {
            "judged": "best --rule judged",
            "max-pref": "the search's pick, best --rule max-pref: no judged point keeps "
            "enough fluency for --rule judged",
        }[shown["rule"]]
        print(f"\npicked ({why}): point {p['point']}, {p['form']} {p['objective']} "
              f"layer {p['layer']} m {p['m']:.3g}")  # fmt: skip
        for pair in shown["rows"]:
            print(f"\nprompt: {pair['prompt']}")
            side_by_side(pair["unsteered"], pair["picked"], names)
    elif shown.get("why"):
        print(f"\npicked: none ({shown['why']})")
    print(f"judge results: {summary['judge_folder']}/")


_JUDGED_FIELDS = (
    "point", "trial_id", "form", "objective", "layer", "m", "rank", "gamma", "pref_odds",
    "util_odds", "n", "probe_accuracy", "unparsed",
)  # fmt: skip


def side_by_side(left: dict, right: dict, names: list[str], width: int = 48) -> None:
    """Two generations in two columns, their scores below them."""
    import textwrap

    columns = []
    for title, side in (("unsteered", left), ("picked", right)):
        scores = ", ".join(f"{n} {cell(side.get(n))}" for n in names if n in side)
        lines = [title, *textwrap.wrap(" ".join(side["text"].split()) or "(empty)", width)]
        columns.append([*lines, "", *textwrap.wrap(scores, width)])
    for a, b in itertools.zip_longest(*columns, fillvalue=""):
        print(f"  {a:<{width}}  | {b}")
