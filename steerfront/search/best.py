"""Picking one configuration from a search's front, and exporting its intervention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from steerfront.errors import SteerfrontError
from steerfront.files import staged_dir
from steerfront.lm import LM
from steerfront.methods.io import export_peft, load_intervention, save_intervention
from steerfront.search.pareto import front_order, knee, pareto_mask

RULES = ("max-pref", "knee")


def read_trials(folder: Path) -> list[dict]:
    """The kept trials of a search. Read in one go: the driver replaces the file while
    workers read it, and a reader that reopened it midway would see two versions."""
    path = folder / "trials.parquet"
    if not path.is_file():
        return []
    return pq.read_table(pa.BufferReader(path.read_bytes())).to_pylist()


def front(done: list[dict]) -> list[dict]:
    """The non-dominated finished trials on validation (pref_odds, util_odds), by pref_odds."""
    if not done:
        return []
    points = np.array([[r["pref_odds"], r["util_odds"]] for r in done], dtype=float)
    return [done[i] for i in front_order(points, pareto_mask(points))]


def pick(done: list[dict], rule: str = "max-pref", max_util_drop: float = 1.0) -> dict:
    """`max-pref`: highest pref_odds with util_drop <= max_util_drop; `knee`: the front's knee."""
    candidates = front(done)
    if not candidates:
        raise SteerfrontError("the search has no finished trials to pick from")
    if rule == "knee":
        points = np.array([[r["pref_odds"], r["util_odds"]] for r in candidates], dtype=float)
        return candidates[knee(points, np.ones(len(candidates), dtype=bool))]
    if rule != "max-pref":
        raise SteerfrontError(f"unknown rule {rule!r} (choose from {', '.join(RULES)})")
    allowed = [r for r in candidates if r["util_drop"] <= max_util_drop]
    if not allowed:
        least = min(r["util_drop"] for r in candidates)
        raise SteerfrontError(
            f"no front configuration keeps util_drop <= {max_util_drop} (the least is "
            f"{least:.3f}); raise --max-util-drop or use --rule knee"
        )
    return max(allowed, key=lambda r: r["pref_odds"])


def export(record: dict, folder: Path, cache_dir: Path, lm: LM) -> Path:
    """Write `best.yaml` and the chosen intervention (plus a PEFT adapter for lora)."""
    source = cache_dir / record["train_key"]
    intervention = load_intervention(source, lm)
    intervention.meta["m"] = record["m"]  # the strength the search chose, for `generate`
    with staged_dir(folder, replace=True) as staging:
        config = {k: _plain(v) for k, v in record.items() if v is not None and k != "error"}
        (staging / "best.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        save_intervention(intervention, staging / "intervention", lm)
        if intervention.form == "lora":
            export_peft(intervention, staging / "peft_adapter", lm)
    return folder


def _plain(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
