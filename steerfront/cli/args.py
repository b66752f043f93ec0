"""Argument helpers and printers the commands share."""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

from steerfront.defaults import DEFAULT_CONCEPT, DEFAULT_MODEL, DTYPES, SEARCH
from steerfront.errors import SteerfrontError
from steerfront.search.storage import Store


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2, no usage block) that point to the help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def reject(self, extra: list[str]) -> None:
        """Unknown arguments, each flag with the nearest known one when there is one."""
        known = [o for action in self._actions for o in action.option_strings if o[:2] == "--"]
        near = [
            f"{word} -> {match[0]}"
            for word in extra
            if word[:2] == "--"
            and (match := difflib.get_close_matches(word.split("=", 1)[0], known, n=1))
        ]
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        self.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


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
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}"
        ) from None


def words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, not {text!r}"
        ) from None


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
        f"(test {record['test_pref_odds']:.3f} / {record['test_util_odds']:.3f})"
    )
    return ", ".join(parts)


def print_front(rows: list[dict], baseline: dict) -> None:
    """The unsteered model, then one line per front point (`dense`: a point of the extended
    front that is not a trial's own result); log-odds with their 95% intervals."""
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
    for r in [unsteered, *rows]:
        point = r.get("point") or ("dense" if r.get("dense") else "trial")
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
