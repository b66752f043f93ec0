"""The driver's model work, done in a Ray worker with a trial's resources.

The unsteered baselines, the test metrics of dense points and the exported best configuration
come from the model as a trial loads it (same device and dtype: bf16 on a GPU worker), so that
`util_drop` compares numbers of one precision, and the driver (a CPU head node, say) never holds
the model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

from steerfront.errors import SteerfrontError
from steerfront.lm import load_config, resolve
from steerfront.memory import GB, check_share, device_memory
from steerfront.scoring.evaluate import evaluate
from steerfront.search.best import export, provenance
from steerfront.search.space import SearchSpace
from steerfront.search.trial import (
    SCORED_SPLITS,
    SearchSetup,
    cached,
    neutral_answers,
    point_metrics,
    score_kl,
    score_test,
)

T = TypeVar("T")


def in_worker(work: Callable[..., T], resources: dict[str, float], *args: object) -> T:
    """`work(*args)` in a Ray worker process of its own, which exits afterwards (and frees the
    model's memory for the trials); a SteerfrontError there comes back as its one line."""
    import ray

    task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_calls=1)(work)
    try:
        return ray.get(task.remote(*args))
    except ray.exceptions.RayTaskError as exc:
        if not isinstance(exc.cause, SteerfrontError):
            raise
        raise SteerfrontError(str(exc.cause)) from None


def unsteered(
    setup: SearchSetup, space: SearchSpace
) -> tuple[
    dict[str, float], dict[str, list[float]], dict[str, list[float]], list[int], dict[str, float]
]:
    """The unsteered model's metrics per scored split (with their intervals), its per-pair
    utility (what each trial's util_drop is measured against) and preference (what `best`'s
    paired verdict measures a pick's gain against), the layers to search and the
    memory settings (`cache_gb`, and on a GPU `trial_memory_gb`). The space is checked against
    the model's configuration, and a trial's memory against its share of the GPU, before the
    model loads."""
    config = load_config(setup.model)
    device, dtype = resolve(setup.device, setup.dtype)
    d, ff = config.hidden_size, config.intermediate_size  # the down-projection's shape
    layers = space.check_model(config.num_hidden_layers, min(d, ff))
    memory = {"cache_gb": round(setup.cache_bytes(device) / GB, 3)}
    if device.type == "cuda":
        estimate = check_share(
            config,
            dtype,
            device_memory(device),
            setup.share(device),
            setup.cache_gb,
            forms=tuple(space.forms),
            rank=max(space.rank),
            stored_layers=config.num_hidden_layers - min(layers),
        )
        memory["trial_memory_gb"] = round(estimate["total"] / GB, 2)
    lm = setup.load()
    splits = setup.splits()
    baseline, utils, prefs = {}, {}, {}
    for name in SCORED_SPLITS:
        encoded = setup.encode(lm, getattr(splits, name))
        scores = evaluate(lm, encoded, None, 0.0, per_token=setup.per_token)
        utils[name], prefs[name] = scores.util.tolist(), scores.pref.tolist()
        metrics = point_metrics(scores, scores.util, setup.seed, "val")[0.0]
        baseline.update({f"{name}_{k}": v for k, v in metrics.items() if "drop" not in k})
    neutral_answers(lm, setup)  # once, before the trials (which read them from the cache)
    baseline["val_kl"] = 0.0  # the unsteered model's kl from itself, by definition
    return baseline, utils, prefs, layers, memory


def score_and_export(
    rows: list[dict], best: int | None, setup: SearchSetup, max_util_drop: float
) -> tuple[list[dict], dict[str, bytes]]:
    """`rows` with their missing test metrics filled in, and the files that export `rows[best]`
    (paths relative to the export folder): none without `best`, and none unless it beats the
    unsteered model on test preference (`best`'s verdict)."""
    lm = setup.load()
    score_test(rows, setup, lm)
    score_kl(rows, setup, lm)
    if best is None:
        return rows, {}
    about = provenance(asdict(setup), rows[best], max_util_drop)
    if not about["beats_baseline"]:
        return rows, {}
    source = cached(setup.store, rows[best]["train_key"], required=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export(rows[best], Path(tmp) / "best", source, lm, about, replace=True)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return rows, {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}
