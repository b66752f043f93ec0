"""Reading polarity pairs from the formats people publish them in.

Formats: `mwe` (Anthropic model-written-evals JSONL), `caa` (a JSON list of the same records),
`axbench` (parquet with input / winning_output / losing_output) and `steerfront` (our JSONL:
prompt / positive / negative / meta). Every problem is a one-line `SteerfrontError` naming the
file, the line or row, and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from steerfront.data.schema import PairSet, PolarityPair
from steerfront.errors import SteerfrontError

FORMATS = ("mwe", "caa", "axbench", "steerfront")
# Per format: the source field for (prompt, positive, negative).
_FIELDS = {
    "mwe": ("question", "answer_matching_behavior", "answer_not_matching_behavior"),
    "caa": ("question", "answer_matching_behavior", "answer_not_matching_behavior"),
    "axbench": ("input", "winning_output", "losing_output"),
    "steerfront": ("prompt", "positive", "negative"),
}


def load_pairs(path: str | Path, fmt: str | None = None) -> PairSet:
    """Read a concept file; the format comes from `fmt` or from the file's shape."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise SteerfrontError(f"{path}: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if not path.is_file():
        raise SteerfrontError(f"{path}: no such file")
    fmt = fmt or detect_format(path)
    if fmt == "axbench":
        records = _parquet_records(path)
    elif fmt == "caa":
        records = _json_list_records(path)
    else:
        records = _jsonl_records(path)
    pairs = tuple(_to_pair(path, where, record, fmt) for where, record in records)
    if not pairs:
        raise SteerfrontError(f"{path}: no pairs in file (empty dataset)")
    return PairSet(path.stem, pairs)


def detect_format(path: Path) -> str:
    """Guess the format from the extension and the first record's keys."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "axbench"
    if suffix == ".json":
        return "caa"
    if suffix == ".jsonl":
        for where, record in _jsonl_records(path):
            keys = set(record)
            for fmt in ("steerfront", "mwe"):
                if set(_FIELDS[fmt]) <= keys:
                    return fmt
            raise SteerfrontError(
                f"{path}:{where}: unknown format: a record needs the fields "
                f"{'/'.join(_FIELDS['steerfront'])} or {'/'.join(_FIELDS['mwe'])}"
            )
        raise SteerfrontError(f"{path}: no pairs in file (empty dataset)")
    raise SteerfrontError(
        f"{path}: unknown format (extension {suffix or 'none'!r}; expected .jsonl, .json or "
        f".parquet, or pass a format: {', '.join(FORMATS)})"
    )


def json_lines(path: Path) -> Iterable[tuple[int, object]]:
    """Each non-empty line of a JSONL file, parsed, with its line number; a line that is not
    JSON fails naming the file and line."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise SteerfrontError(f"{path}:{number}: invalid JSON ({exc.msg})") from None


def _jsonl_records(path: Path) -> Iterable[tuple[str, dict]]:
    for number, record in json_lines(path):
        if not isinstance(record, dict):
            raise SteerfrontError(f"{path}:{number}: expected a JSON object")
        yield str(number), record


def _json_list_records(path: Path) -> Iterable[tuple[str, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SteerfrontError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise SteerfrontError(f"{path}: expected a JSON list of objects")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise SteerfrontError(f"{path}: item {index}: expected a JSON object")
        yield f"item {index}", record


def _parquet_records(path: Path) -> Iterable[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise SteerfrontError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [name for name in _FIELDS["axbench"] if name not in table.column_names]
    if missing:
        raise SteerfrontError(f"{path}: parquet file lacks column(s) {', '.join(missing)}")
    for index, record in enumerate(table.select(list(_FIELDS["axbench"])).to_pylist()):
        yield f"row {index}", record


def _to_pair(path: Path, where: str, record: dict, fmt: str) -> PolarityPair:
    where = f"{path}:{where}" if where.isdigit() else f"{path}: {where}"
    values = []
    for name in _FIELDS[fmt]:
        value = record.get(name)
        if isinstance(value, list) and fmt in ("mwe", "caa"):
            value = value[0] if value else None
        if value is None:
            raise SteerfrontError(f"{where}: field {name!r} is missing")
        if not isinstance(value, str):
            raise SteerfrontError(
                f"{where}: field {name!r} must be a string, not {type(value).__name__}"
            )
        if not value.strip():
            raise SteerfrontError(f"{where}: field {name!r} is empty")
        values.append(value)
    prompt, positive, negative = values
    if positive == negative:
        raise SteerfrontError(
            f"{where}: fields {_FIELDS[fmt][1]!r} and {_FIELDS[fmt][2]!r} are identical"
        )
    meta = record.get("meta", {}) if fmt == "steerfront" else {}
    if not isinstance(meta, dict):
        raise SteerfrontError(f"{where}: field 'meta' must be an object")
    return PolarityPair(prompt, positive, negative, meta)
