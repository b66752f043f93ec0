"""After a tiny judged search, a real headless Chromium browses the MLflow UI that
`steerfront ui` serves: the parent run, a child run, the parent's pareto.png artifact and one
generated text in its table of judged generations."""

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import free_port

from steerfront.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--virtual-time-budget=20000",
    "--window-size=1400,1000",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output"


def browse(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The page's visible text after its scripts ran (or, if asked, a screenshot)."""
    extra = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return re.sub(r"<[^>]+>", "", result.stdout)


def test_mlflow_ui_shows_the_search(tmp_path, talking_model_dir, capsys):
    runs = tmp_path / "runs"
    flags = ["--model", str(talking_model_dir), "--storage", str(runs), "--name", "browsed"]
    flags += ["--trials", "2", "--layers", "1", "--forms", "vector", "--objectives", "diffmean"]
    flags += ["--judge", "local", "--judge-points", "1", "--max-new-tokens", "8"]
    assert main(["search", *flags, "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    parent = summary["mlflow_parent_run_id"]

    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "steerfront.cli", "ui", "--storage", str(runs), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = ui.stdout.readline()
        assert f"MLflow UI on http://127.0.0.1:{port}" in line
        base = f"http://127.0.0.1:{port}"
        from mlflow.tracking import MlflowClient

        client = MlflowClient(summary["mlflow_tracking_uri"])
        experiment = client.get_run(parent).info.experiment_id
        children = client.search_runs(
            [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
        )
        trials = [c for c in children if "steerfront.trial_id" in c.data.tags]
        assert len(trials) == 2  # and a run of its own for a judged dense point, if any

        runs_page = browse(f"{base}/#/experiments/{experiment}/runs", tmp_path / "p1")
        assert "browsed" in runs_page and f"{len(children) + 1} matching runs" in runs_page
        child_page = browse(
            f"{base}/#/experiments/{experiment}/runs/{children[0].info.run_id}", tmp_path / "p2"
        )
        assert "Parent run" in child_page and "browsed" in child_page
        artifact = f"{base}/#/experiments/{experiment}/runs/{parent}/artifacts/pareto.png"
        assert "pareto.png" in browse(artifact, tmp_path / "p3")
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = SCREENSHOTS / "mlflow-pareto.png"
        browse(artifact, tmp_path / "p4", screenshot=shot)
        assert shot.stat().st_size > 20_000
        png = urllib.request.urlopen(
            f"{base}/get-artifact?path=pareto.png&run_uuid={parent}", timeout=30
        ).read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        texts = pq.read_table(runs / "browsed" / "judge" / "generations.parquet")["text"]
        text = next(t for t in texts.to_pylist() if t.isalnum())  # a tiny model's bytes: plain ones
        table = f"{base}/#/experiments/{experiment}/runs/{parent}/artifacts/judge/generations.json"
        assert text in browse(table, tmp_path / "p5")  # shown as a table, one row per text
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=30) in (0, 130)
    # The port is free again (no one listens; TIME_WAIT is fine): the server stopped with us.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
