"""MLflow tracking, from the driver only: one parent run per search, one child run per trial.

Every result is first kept in the search's own folder (`trials.parquet`), then logged; a
trial already logged (tag `steerfront.trial_id`) is never logged twice, so a resumed search
adds no duplicate child runs.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from steerfront.errors import SteerfrontError

EXPERIMENT = "steerfront"
PARAMS = ("form", "objective", "layer", "m", "rank", "gamma", "lambda_n", "theta", "lr", "steps")
# A point's metrics on one split: each log-odds mean with its bootstrap interval, and accuracy.
POINT_METRICS = (
    *(
        f"{name}{end}"
        for name in ("pref_odds", "util_odds", "util_drop")
        for end in ("", "_lo", "_hi")
    ),
    "accuracy",
)
# kl from the unsteered model on neutral answers (scoring/kl.py), one per point, on no split.
KL_METRICS = tuple(f"{name}{end}" for name in ("kl", "kl_first") for end in ("", "_lo", "_hi"))
METRICS = (
    *POINT_METRICS,
    *KL_METRICS,
    *(f"test_{name}" for name in POINT_METRICS),
    "train_s",
    "eval_s",
    "cache_hit",
)


def tracking_uri(given: str | None, storage: str) -> str:
    """The MLflow store: as given, else MLFLOW_TRACKING_URI, else SQLite in the storage folder."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if "://" in storage:
        raise SteerfrontError(
            f"storage {storage}: the default MLflow store (SQLite beside the results) cannot "
            "live in an object store; give --tracking-uri (an MLflow server) or set "
            "MLFLOW_TRACKING_URI"
        )
    return f"sqlite:///{Path(storage).resolve() / 'mlflow.db'}"


def _local_artifacts(tracking_uri: str, root: Path | None) -> str | None:
    """Beside a local store, artifacts go to `root` (not the current folder); a server decides
    for itself."""
    if root is None or tracking_uri.split(":", 1)[0] not in ("sqlite", "file"):
        return None
    return Path(root).resolve().as_uri()


def _in_turn(method: Callable) -> Callable:
    """Run a Tracker method while holding the store's turn."""

    @functools.wraps(method)
    def wrapper(self: Tracker, *args: object, **kwargs: object) -> object:
        with self._turn():
            return method(self, *args, **kwargs)

    return wrapper


class Tracker:
    """A search's parent run and its children in one MLflow tracking store."""

    def __init__(
        self,
        tracking_uri: str,
        name: str,
        parent_run_id: str | None = None,
        artifact_root: Path | None = None,
        launch_run_id: str | None = None,
        kind: str = "search",
    ) -> None:
        """The run of search (or, `kind` "launch", launch) `name`: `parent_run_id`'s, else a new
        one, nested under the launch's run `launch_run_id` when it is one of a launch's."""
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no store-migration chatter
        # A server that went away should cost seconds per attempt, not minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.uri = tracking_uri
        # Searches sharing one SQLite store take turns (its schema set-up and writes race).
        self._lock_path = (
            Path(tracking_uri.removeprefix("sqlite:///") + ".lock")
            if tracking_uri.startswith("sqlite:///")
            else None
        )
        try:
            with self._turn():  # the client sets up (migrates) a new store: one at a time
                self.client = MlflowClient(tracking_uri=tracking_uri)
                self._open(name, parent_run_id, artifact_root, launch_run_id, kind)
        except Exception as exc:  # any store or server failure
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SteerfrontError(f"MLflow tracking store {tracking_uri}: {message}") from None

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """Hold the store's lock file (SQLite only) for one piece of work."""
        if self._lock_path is None:
            yield
            return
        with self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _open(
        self,
        name: str,
        parent_run_id: str | None,
        artifact_root: Path | None,
        launch_run_id: str | None,
        kind: str,
    ) -> None:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        self.experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(
                EXPERIMENT, artifact_location=_local_artifacts(self.uri, artifact_root)
            )
        )
        if parent_run_id is None:
            tags = {f"steerfront.{kind}": name}
            if launch_run_id is not None:
                tags["mlflow.parentRunId"] = launch_run_id
            parent_run_id = self.client.create_run(
                self.experiment_id, run_name=name, tags=tags
            ).info.run_id
        self.parent_run_id = parent_run_id

    @_in_turn
    def logged_trials(self) -> set[str]:
        """Trial ids already logged as children of this search's parent run."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
            max_results=10000,
        )
        return {run.data.tags.get("steerfront.trial_id") for run in runs}

    @_in_turn
    def log_params(self, params: dict) -> None:
        for key, value in params.items():
            self.client.log_param(self.parent_run_id, key, value)

    @_in_turn
    def log_trial(self, record: dict) -> None:
        """One child run: params and metrics, or status FAILED with the reason."""
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "steerfront.trial_id": record["trial_id"],
        }
        if record["status"] == "failed":
            tags["steerfront.error"] = record.get("error", "")[:5000]
        run = self.client.create_run(
            self.experiment_id, run_name=record["trial_id"], tags=tags
        ).info.run_id
        for key in PARAMS:
            if record.get(key) is not None:
                self.client.log_param(run, key, record[key])
        for key in METRICS:
            value = record.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                self.client.log_metric(run, key, float(value))
        self.client.set_terminated(run, "FAILED" if record["status"] == "failed" else "FINISHED")

    @_in_turn
    def log_metric(self, key: str, value: float, step: int) -> None:
        self.client.log_metric(self.parent_run_id, key, value, step=step)

    @_in_turn
    def log_parent_metrics(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.parent_run_id, key, value)

    @_in_turn
    def log_point(self, record: dict, metrics: dict[str, float]) -> None:
        """Metrics of one front point: into its trial's child run, or, for a dense point (the
        trial's intervention at another m), into a child run of its own, made once."""
        children = f"tags.mlflow.parentRunId = '{self.parent_run_id}'"
        if not record.get("dense"):
            where = f"{children} and tags.`steerfront.trial_id` = '{record['trial_id']}'"
        else:
            point = f"{record['trial_id']} m={record['m']:.6g}"
            where = f"{children} and tags.`steerfront.point` = '{point}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=where, max_results=1)
        if runs:
            run = runs[0].info.run_id
        else:  # a dense point: its configuration and log-odds, then the judge's metrics
            tags = {"mlflow.parentRunId": self.parent_run_id, "steerfront.point": point}
            run = self.client.create_run(self.experiment_id, run_name=point, tags=tags)
            run = run.info.run_id
            for key in PARAMS:
                if record.get(key) is not None:
                    self.client.log_param(run, key, record[key])
            for key in METRICS:
                if isinstance(record.get(key), int | float) and math.isfinite(record[key]):
                    self.client.log_metric(run, key, float(record[key]))
            self.client.set_terminated(run, "FINISHED")
        for key, value in metrics.items():
            self.client.log_metric(run, key, value)

    @_in_turn
    def log_table(self, data: dict[str, list], artifact_file: str) -> None:
        """A table the MLflow UI shows, in the parent run; logged again, it is replaced (not
        appended to, as MLflow's own `log_table` would)."""
        import tempfile

        import pandas as pd

        folder = str(Path(artifact_file).parent)
        logged = [a.path for a in self.client.list_artifacts(self.parent_run_id, folder)]
        if artifact_file not in logged:
            self.client.log_table(self.parent_run_id, data, artifact_file)
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            pd.DataFrame(data).to_json(path, orient="split", index=False)
            self.client.log_artifact(self.parent_run_id, str(path), folder)

    @_in_turn
    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """A file, or a folder under its own name, into the parent run (inside `folder`)."""
        if path.is_dir():
            self.client.log_artifacts(
                self.parent_run_id, str(path), f"{folder}/{path.name}" if folder else path.name
            )
        else:
            self.client.log_artifact(self.parent_run_id, str(path), folder)

    @_in_turn
    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status)


def prompted_metrics(prompted: dict[str, float]) -> dict[str, float]:
    """The prompted baseline's scores as the parent run's metrics (`prompted_val_pref_odds`,
    `prompted_val_kl`, ...): numbers beside the trials' curves, not parameters."""
    return {f"prompted_{k}": v for k, v in prompted.items()}


def log_judged(
    uri: str,
    name: str,
    parent_run_id: str,
    judged: list[dict],
    rows: list[dict],
    names: list[str],
    agreement: dict,
    out: Path,
    folder: str,
    files: tuple[str, ...],
) -> None:
    """`judge_*` metrics on each judged point's child run (the unsteered and prompted models'
    and the agreement on the parent), the generations as a table and the files on the parent. MLflow
    down: a warning, the files stay in `out` (the search's `folder`, whose `files` are logged)."""
    try:
        tracker = Tracker(uri, name, parent_run_id)
        for record in judged:
            keys = [*names, *(f"{n}_se" for n in names), "probe_accuracy"]
            metrics = {k: record[k] for k in keys if record.get(k) is not None}
            if record["point"] <= 0:  # the baselines: the unsteered (0) and prompted (-1) model
                side = "unsteered" if record["point"] == 0 else "prompted"
                tracker.log_parent_metrics({f"judge_{side}_{k}": v for k, v in metrics.items()})
            else:
                tracker.log_point(record, {f"judge_{k}": v for k, v in metrics.items()})
        tracker.log_parent_metrics(  # rho only with its interval (None below 8 points)
            {
                f"judge_agreement_{k}{suffix}": v[field]
                for k, v in agreement.items()
                for field, suffix in (
                    ("rho", ""),
                    ("lo", "_lo"),
                    ("hi", "_hi"),
                    ("points", "_points"),
                )
                if v[field] is not None
            }
        )
        columns = [k for k in rows[0] if k not in ("train_key", "trial_id")]
        tracker.log_table(
            {k: [r.get(k) for r in rows] for k in columns}, f"{folder}/generations.json"
        )
        for file in files:
            tracker.log_artifact(out / file, folder)
    except Exception as exc:  # any store or server failure
        print(
            f"steerfront: warning: judge results not logged to MLflow "
            f"({str(exc).splitlines()[0][:200]}); they are in {out}",
            file=sys.stderr,
        )


def serve_ui(
    tracking_uri: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    json_line: bool = False,
    quiet: bool = False,
) -> None:
    """Run the MLflow UI on `tracking_uri` (one worker) until Ctrl-C, then stop it cleanly;
    its address is printed once it answers (as JSON with `json_line`); `quiet` hides the
    server's own log."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    command = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if quiet else {}
    server = subprocess.Popen(command, start_new_session=True, **{"stdout": sys.stderr, **log})
    url = f"http://{host}:{port}"
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SteerfrontError(f"the MLflow UI exited at start (is port {port} free?)")
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        if json_line:
            print(json.dumps({"url": url, "tracking_uri": tracking_uri}), flush=True)
        else:
            print(f"MLflow UI on {url} (store {tracking_uri}); Ctrl-C stops it", flush=True)
        server.wait()
    except KeyboardInterrupt:
        if not quiet:
            print("stopping the MLflow UI", file=sys.stderr)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
