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


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"built-in name, local folder or Hugging Face hub id (default: {DEFAULT_MODEL})",
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


def add_format(parser: argparse.ArgumentParser) -> None:
    from steerfront.data import FORMATS

    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="concept file format (default: detected from the file's extension and fields)",
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


def print_front(rows: list[dict]) -> None:
    """One line per front point; `dense` marks points of the extended front that are not a
    trial's own result."""
    heads = (
        "point",
        "form",
        "objective",
        "layer",
        "m",
        "rank",
        "gamma",
        "pref val",
        "util val",
        "drop val",
        "pref test",
        "util test",
    )
    print("  ".join(f"{h:>12}" for h in heads))
    for r in rows:
        cells = [
            "dense" if r.get("dense") else "trial",
            r["form"],
            r["objective"],
            int(r["layer"]),
            r["m"],
            r.get("rank"),
            r.get("gamma"),
            r["pref_odds"],
            r["util_odds"],
            r["util_drop"],
            r["test_pref_odds"],
            r["test_util_odds"],
        ]
        print("  ".join(f"{cell(c):>12}" for c in cells))


def cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.3f}"
    return str(value)
