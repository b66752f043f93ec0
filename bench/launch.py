"""A launch over many concepts against the same searches run one after another, side by side in
one run: wall time and model loads.

On the default model with `--concurrency` workers (2: this machine's cores), the four built-in
concepts, each with the same budget (`--trials`, `--steps`). First every concept as its own
`steerfront search` (one process each, as a user would run them), then all of them as one
`steerfront search --concept A --concept B ...` launch; both through the CLI, each in a fresh
storage folder (nothing cached between them but the unsteered answers kl compares against,
which both read from the same user cache). Model loads counted: the trial workers' (from the
summaries) and the driver's model work (the unsteered scores and the settling of the fronts:
one worker each per search; per launch, as many as trials run at once, sharing its
concepts). Target: launch / separate <= 0.75, and the launch loads the model once per
worker. The last line is JSON.

    .venv/bin/python bench/launch.py [--trials 4] [--steps 16] [--concurrency 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steerfront.data import builtin_names
from steerfront.lm import _cpu_name

TARGET = 0.75


def search(storage: Path, flags: list[str]) -> tuple[float, dict]:
    """One `steerfront search` (or launch): its wall time and its JSON summary."""
    argv = [sys.executable, "-m", "steerfront.cli", "search", "--storage", str(storage)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    started = time.perf_counter()
    done = subprocess.run([*argv, *flags, "--json", "-q"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench/launch.py: {' '.join(flags)} failed:\n{done.stderr[-3000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: the default model")
    parser.add_argument("--concepts", nargs="+", default=builtin_names())
    parser.add_argument("--trials", type=int, default=4, help="per concept (default: 4)")
    parser.add_argument("--steps", default="16", help="training steps (default: 16)")
    parser.add_argument("--concurrency", type=int, default=2, help="workers (default: 2)")
    parser.add_argument(
        "--out", default=None, help="keep both runs' storage here (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    common = ["--trials", str(args.trials), "--steps", args.steps]
    common += ["--model", args.model] if args.model else []
    common += ["--concurrency", str(args.concurrency)]
    print(f"cpu: {_cpu_name()}; {len(args.concepts)} concepts x {args.trials} trials, "
          f"{args.concurrency} workers", flush=True)  # fmt: skip
    kept = contextlib.nullcontext(args.out) if args.out else tempfile.TemporaryDirectory()
    with kept as tmp:
        separate, loads = 0.0, 0
        for concept in args.concepts:
            wall, summary = search(Path(tmp) / "separate", [*common, "--concept", concept,
                                                            "--name", concept])  # fmt: skip
            separate += wall
            loads += summary["model_loads"]
            print(f"  search {concept}: {wall:.0f} s, {summary['model_loads']} model loads in "
                  f"its trial workers", flush=True)  # fmt: skip
        flags = [*common, "--name", "builtin"]
        for concept in args.concepts:
            flags += ["--concept", concept]
        launched, summary = search(Path(tmp) / "launch", flags)
    # the unsteered scores and the settling: a worker each per search, or per slot of a launch
    slots = min(args.concurrency, len(args.concepts))
    driver = {"separate": 2 * len(args.concepts), "launch": 2 * slots}
    ratio = launched / separate
    print(f"separate searches: {separate:.0f} s, model loads {loads} in trial workers + "
          f"{driver['separate']} for the driver's model work")  # fmt: skip
    print(f"one launch:        {launched:.0f} s, model loads {summary['model_loads']} in trial "
          f"workers + {driver['launch']} for the driver's model work")  # fmt: skip
    print(f"launch / separate: {ratio:.2f} (target <= {TARGET})")
    result = {
        "separate_s": round(separate, 1),
        "launch_s": round(launched, 1),
        "ratio": round(ratio, 3),
        "target": TARGET,
        "model_loads": {"separate": loads, "launch": summary["model_loads"]},
        "driver_model_loads": driver,
        "report": [
            {k: r[k] for k in ("concept", "gain", "kl", "verdict")} for r in summary["report"]
        ],  # fmt: skip
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
