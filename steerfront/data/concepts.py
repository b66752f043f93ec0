"""Concept sets: many concepts named at once, for a launch (`steerfront search --concepts`)."""

from __future__ import annotations

import re
from pathlib import Path

from steerfront.data.loaders import json_lines
from steerfront.errors import SteerfrontError

# A parquet concept set's concept column: AxBench's, then ours.
GROUP_COLUMNS = ("output_concept", "concept")
_SUFFIXES = (".jsonl", ".json", ".parquet")


def concept_label(spec: str) -> str:
    """A concept's name in a launch (its search's name ends with it): a built-in name, or a
    file's stem, in letters, digits, '.', '_' and '-'."""
    name = spec if "/" not in spec and "." not in spec else Path(spec).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "concept"


def concept_set(path: str | Path) -> list[str]:
    """The concepts `path` names, each a built-in name or a concept file: a folder of concept
    files (.jsonl, .json, .parquet; each one concept), a JSONL list (a line per concept: a
    JSON string, or an object with `concept`; paths relative to the list), or a parquet file
    with a concept column (`GROUP_COLUMNS`; one concept per group, split by `split_groups`
    when the launch starts)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
        if not files:
            raise SteerfrontError(f"--concepts {path}: no concept files (.jsonl, .json, .parquet)")
        return [str(p.resolve()) for p in files]
    if not path.is_file():
        raise SteerfrontError(f"--concepts {path}: no such file or folder")
    if grouped(path):
        return [str(path.resolve())]
    if path.suffix.lower() != ".jsonl":
        raise SteerfrontError(
            f"--concepts {path}: expected a folder, a JSONL list or a parquet file with a "
            f"{' or '.join(GROUP_COLUMNS)} column"
        )
    concepts = []
    for number, item in json_lines(path):
        if isinstance(item, dict):
            item = item.get("concept")
        if not isinstance(item, str) or not item:
            raise SteerfrontError(
                f"{path}:{number}: expected a concept (a JSON string or an object with "
                "'concept'); a concept's pairs go in a file of their own"
            )
        given = path.parent / item
        concepts.append(str(given.resolve()) if given.exists() else item)
    if not concepts:
        raise SteerfrontError(f"--concepts {path}: the list is empty")
    return concepts


def grouped(path: str | Path) -> str | None:
    """The concept column of a parquet concept set (one concept per group), if it has one."""
    path = Path(path)
    if path.suffix.lower() != ".parquet" or not path.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise SteerfrontError(f"{path}: not a readable parquet file ({exc})") from None
    return next((c for c in GROUP_COLUMNS if c in names), None)


def split_groups(path: str | Path, column: str, folder: Path) -> list[str]:
    """Each group of a parquet concept set written to `folder` as a concept file of its own
    (named by its group); their paths."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for group in dict.fromkeys(table.column(column).to_pylist()):
        if group is None:
            raise SteerfrontError(f"{path}: a row has no {column}")
        rows = table.filter(pc.equal(table.column(column), group))
        target = folder / f"{concept_label(str(group))}.parquet"
        pq.write_table(rows, target)
        files.append(str(target))
    return files
