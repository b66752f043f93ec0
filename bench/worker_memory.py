"""Resident memory of a command and every process it starts (a search's driver and its Ray
workers), sampled every half second: each process's peak and mean RSS, largest first.

    .venv/bin/python bench/worker_memory.py steerfront search --concept sentiment --trials 6

How README's "Memory" figures for a search worker were measured. psutil comes with Ray.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import psutil

MIN_BYTES = 50e6  # processes below this (Ray's small helpers) are left out


def sample(command: list[str], every: float = 0.5) -> tuple[list[dict], int, float]:
    """Per process: its command line, peak and mean RSS; the exit status and the wall time."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    threading.Thread(target=lambda: tail.extend(proc.stdout), daemon=True).start()
    root, started, seen = psutil.Process(proc.pid), time.monotonic(), {}
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                name, rss = " ".join(p.cmdline())[:70], p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            entry = seen.setdefault(p.pid, {"name": name, "peak": 0, "sum": 0, "n": 0})
            if "ray::" in name:  # a Ray worker names its task once it runs one
                entry["name"] = name
            entry.update(peak=max(entry["peak"], rss), sum=entry["sum"] + rss, n=entry["n"] + 1)
        time.sleep(every)
    proc.wait()
    sys.stdout.write("".join(tail[-5:]))
    rows = [
        {"name": e["name"], "peak_gb": e["peak"] / 1e9, "mean_gb": e["sum"] / e["n"] / 1e9}
        for e in seen.values()
        if e["peak"] > MIN_BYTES
    ]
    return sorted(rows, key=lambda r: -r["peak_gb"]), proc.returncode, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    command = (argv if argv is not None else sys.argv[1:]) or ["steerfront", "search", "-q"]
    rows, status, wall = sample(command)
    print(f"wall {wall:.0f} s, exit status {status}")
    for r in rows:
        print(f"peak {r['peak_gb']:5.2f} GB  mean {r['mean_gb']:5.2f} GB  {r['name']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
