"""What a search keeps of each trial: the fields of `trials.parquet`, and writing it.

Below both the driver (`run`) and the results (`report`), which read and write these rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from steerfront.files import write_atomic
from steerfront.search.tracking import KL_METRICS, METRICS, PARAMS, POINT_METRICS

# A point's per-pair test scores (pairs in the test split's order), kept beside its intervals:
# `best` bootstraps the per-pair gain over the unsteered model with the same draws.
PER_PAIR = ("test_pref_pairs", "test_util_pairs")
# What a trial reports: the metrics, its dense points, then what it cost and where it ran.
RESULT_KEYS = (
    *METRICS,
    *PER_PAIR,
    "dense_points",
    "trained",
    "model_loaded",
    "train_key",
    "node",
    "trained_on",
)

_TEXT = ("train_key", "node", "trained_on")
DENSE_POINT = pa.struct([(k, pa.float64()) for k in ("m", *POINT_METRICS, *KL_METRICS)])
SCHEMA = pa.schema(
    [("trial_id", pa.string()), ("status", pa.string())]
    + [(k, pa.string() if k in ("form", "objective") else pa.float64()) for k in PARAMS]
    + [("factors", pa.string())]
    + [
        (
            k,
            pa.list_(DENSE_POINT)
            if k == "dense_points"
            else pa.list_(pa.float64())
            if k in PER_PAIR
            else pa.string()
            if k in _TEXT
            else pa.float64(),
        )
        for k in RESULT_KEYS
    ]
    + [("feasible", pa.bool_()), ("error", pa.string())]
)


def write_table(path: Path, records: list[dict]) -> None:
    """Every trial, every field, with one fixed schema (failed trials have no metrics)."""
    rows = [{name: record.get(name) for name in SCHEMA.names} for record in records]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), sink)
    write_atomic(path, sink.getvalue().to_pybytes())


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rows of any fields (the union of the rows' keys, first seen first; a row without one
    has it empty) as one Parquet file: the judged tables, a launch's report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows]), sink)
    write_atomic(path, sink.getvalue().to_pybytes())


INTEGERS = ("layer", "rank", "steps")


def typed(record: dict) -> dict:
    """A row as users read it (JSON, YAML): integers as integers, a missing value as None,
    the training factors as a list."""
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and value != value:
            value = None
        elif key in INTEGERS and value is not None:
            value = int(value)
        elif key == "factors" and isinstance(value, str):
            value = json.loads(value)
        out[key] = value
    return out
