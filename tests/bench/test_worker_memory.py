"""bench/worker_memory.py: the peak it reports is the memory a child process really held."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import worker_memory  # noqa: E402


def test_a_child_holding_300_mb_is_reported_with_its_status():
    child = (
        "import time; x = bytearray(300_000_000); x[::4096] = b'1' * len(x[::4096]); time.sleep(2)"
    )
    rows, status, wall = worker_memory.sample(
        [sys.executable, "-c", f"{child}; raise SystemExit(3)"]
    )
    assert status == 3 and wall >= 2
    assert len(rows) == 1 and 0.3 <= rows[0]["peak_gb"] < 0.5
    assert rows[0]["mean_gb"] <= rows[0]["peak_gb"]
