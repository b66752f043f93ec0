"""The README cannot rot: its tour is executed (on a tiny model), and its reference tables
match the defaults the code uses."""

import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from steerfront import defaults
from steerfront.cli import build_parser, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
TOUR = [
    line.strip()[2:] for line in README.splitlines() if line.strip().startswith("$ steerfront ")
]
# Where the tour meets the real default model, a test uses the tiny one and a smaller budget.
TINY = {
    "evaluate": ["--pairs", "2"],
    "sweep": ["--batch-size", "4", "--steps", "6", "-q"],
    "search": ["--trials", "3", "--steps", "6", "-q"],
    "best": ["--force"],  # a tiny random model's pick need not beat its unsteered self
    "judge": ["--max-new-tokens", "4", "--judge-points", "2", "-q"],
    "layers": ["--no-gain", "-q"],  # the gain generates neutral answers: tests/test_cli_layers
}


def test_the_tour_covers_every_command():
    assert len(TOUR) >= 8
    used = {shlex.split(line)[1] for line in TOUR}
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert used == commands


def test_the_tour_runs(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for line in TOUR:
        argv = shlex.split(line)[1:]
        command = argv[0]
        if command == "ui":
            check_ui(argv)
            continue
        options = {a.dest for a in build_parser()._subparsers._group_actions[0].choices[
            command]._actions}  # fmt: skip
        if "model" in options and command != "generate":
            argv += ["--model", str(tiny_model_dir)]
        argv += TINY.get(command, [])
        status = main(argv)
        out, err = capsys.readouterr()
        assert status == 0, f"{line}\n{err[-1500:]}"


def test_reference_commands_parse():
    """Commands shown for other machines (a cluster) use only flags the CLI has."""
    text = README.replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.startswith("    steerfront ")]
    assert lines
    for line in lines:
        build_parser().parse_args(shlex.split(line)[1:])


def test_the_demo_command_parses():
    """`make demo` runs a command the CLI accepts (the demo itself is too long for a test)."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    line = next(line for line in recipe.splitlines() if "steerfront " in line)
    args = build_parser().parse_args(shlex.split(line.split("steerfront ", 1)[1]))
    assert (args.command, args.concept, args.judge) == ("search", ["sentiment"], "local")


def check_ui(argv: list[str]) -> None:
    """`steerfront ui` serves, prints its URL, and stops on Ctrl-C."""
    port = "5077"
    ui = subprocess.Popen(
        [sys.executable, "-m", "steerfront.cli", *argv, "--port", port],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"http://127.0.0.1:{port}" in ui.stdout.readline()
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=30) in (0, 130)


def table(title_row: str) -> dict[str, str]:
    """First two columns of the README table whose header starts with `title_row`."""
    lines = README[README.index(title_row) :].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1]
    return rows


def test_search_space_reference_matches_the_defaults():
    rows = table("| key | default | meaning |")
    space = defaults.SEARCH_SPACE
    assert set(rows) == {
        "forms", "objectives", "layers", "m", "rank", "gamma", "lambda_n", "theta", "lr",
        "steps", "factors",
    }  # fmt: skip
    assert rows["forms"] == f"`[{', '.join(space['forms'])}]`"
    assert rows["objectives"] == f"`[{', '.join(space['objectives'])}]`"
    ranges = ", ".join(f"{f}: [{lo:g}, {hi:g}]" for f, (lo, hi) in space["m"].items())
    assert rows["m"] == f"`{{{ranges}}}`"
    assert rows["rank"] == f"`[{', '.join(map(str, space['rank']))}]`"
    assert rows["gamma"] == f"`[{space['gamma'][0]}, {space['gamma'][1]}]`"
    assert rows["lambda_n"] == f"`{space['lambda_n']}`" and rows["theta"] == f"`{space['theta']}`"
    assert rows["steps"].startswith(f"`[{space['steps'][0]}]`")
    lr = defaults.LEARNING_RATE
    assert rows["lr"] == f"per form: {lr['vector']:g} vector, {lr['lora']:g} otherwise"


def test_search_defaults_in_prose_match():
    assert f"{defaults.SEARCH['trials']} trials" in README
    assert f"`{defaults.DEFAULT_CONCEPT}` concept" in README


@pytest.mark.parametrize("command", sorted(build_parser()._subparsers._group_actions[0].choices))
def test_every_flag_is_explained_with_its_default(command):
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no help"
        takes_value = action.nargs != 0
        if takes_value and not action.required:
            assert re.search(r"default", action.help), f"{command} {action.option_strings[0]}"
