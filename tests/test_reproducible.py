"""Same inputs, same trial: what is computed never depends on the memory free when it runs.

The free memory decides only how much runs at once: into how many micro-batches a training
step's batch is cut (the step's gradient is the whole batch's), how many pairs are scored and
how many rows are decoded together (sampling is seeded per row). The ballast tests run the same
sweep, and the same sampled generation, once as the machine is and once with a real process
holding most of its free memory, and compare the numbers.

A tiny model needs little memory: `memory.ACTIVATION_SHARE` (the share of the free memory a
batch's activations may take, read as the budget is computed) is lowered until the budget,
still read from the real free memory, holds about one training batch (or a dozen answers);
the ballast then cuts it several times, which each test checks before comparing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from steerfront import memory
from steerfront.data import PairSet, encode_pairs, load_concept, render_prompt
from steerfront.forward import batch_tokens
from steerfront.lm import load_model
from steerfront.methods import Objective, TrainSpec, init_intervention, train
from steerfront.methods.generate import generate_rows
from steerfront.scoring.sweep import run_sweep

CPU = torch.device("cpu")
GIB = 2**30
# What the ballast leaves free: the machine is shared, and must not run out.
MARGIN = 4 * GIB
# The ballast must leave at most this share of the free memory, or the cut may not change.
MOST = 0.45
BALLAST = (
    "import sys, numpy\n"
    "block = numpy.ones(int(sys.argv[1]), dtype=numpy.uint8)  # every page written: resident\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()  # held until the test closes stdin\n"
)
PAIRS = PairSet("few", load_concept("agreeableness").pairs[:24])
BATCH = 8
# The sweeps: a hinge loss (token means over the batch), RePS (a mean over rows), DiffMean.
SPECS = {
    "lora-split": TrainSpec(form="lora", layer=1, batch_size=BATCH, steps=8, patience=1),
    "vector-reps": TrainSpec(
        form="vector", layer=2, objective=Objective("reps"), batch_size=BATCH, steps=6, patience=0
    ),
    "diffmean": TrainSpec(form="vector", layer=2, objective=Objective("diffmean")),
}
GRID = [-2.0, 0.0, 1.0, 3.0]
PROMPTS = ["hi", "tell me about the sea", "what is two and two", "a", "why", "name a colour"]


@contextmanager
def ballast() -> Iterator[int]:
    """A process holding all but `MARGIN` of the free memory, written so that it is resident;
    yields its size. Skips when the machine has too little free for the cut to change."""
    free = memory.free_memory(CPU)
    size = free - MARGIN
    if size <= 0 or MARGIN / free > MOST:
        pytest.skip(f"{free / GIB:.1f} GiB free: too little for a ballast that changes the cut")
    process = subprocess.Popen(
        [sys.executable, "-c", BALLAST, str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "ready", "the ballast did not start"
        yield size
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def calibrate(monkeypatch: pytest.MonkeyPatch, budget: Callable[[], int], target: int) -> None:
    """Lower `memory.ACTIVATION_SHARE` to the least share whose `budget()` (read from the
    free memory as it is) reaches `target`."""
    share = 1e-12
    while True:
        monkeypatch.setattr(memory, "ACTIVATION_SHARE", share)
        if budget() >= target:
            return
        share *= 1.2
        assert share < 1, "no share of the free memory reaches the target"


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu", dtype=torch.float32)


def sweep_numbers(lm, spec: TrainSpec) -> dict[str, torch.Tensor]:
    """What a sweep reports: the intervention's tensors, every pair's scores and the per-m
    summary, as tensors to compare."""
    splits = PAIRS.split(0.0, 0.25, seed=0)
    result = run_sweep(lm, splits, spec, GRID, fits=False)
    out = {f"param {k}": v.detach().clone() for k, v in result["intervention"].params.items()}
    for name in ("pairs", "summary"):
        table = result[name]
        for column in table.column_names:
            values = table.column(column).to_pylist()
            if values and all(isinstance(v, float) for v in values):
                out[f"{name} {column}"] = torch.tensor(values, dtype=torch.float64)
    return out


def training_rows(lm, spec: TrainSpec) -> int:
    """Pairs per micro-batch of the widest training batch, as the free memory now cuts it:
    the budget for a step's add and sub rows through the layers above the frozen prefix."""
    encoded = encode_pairs(lm.tokenizer, PAIRS.split(0.0, 0.25, seed=0).train)
    start = init_intervention(spec.form, lm, spec.layer, spec.rank).start
    tokens = batch_tokens(lm, encoded, stored_layers=lm.n_layers - start, copies=2)
    widest = max(len(e.prompt) + len(e.positive) + len(e.negative) - 2 for e in encoded)
    return tokens // widest


def assert_same(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys() and any(k.startswith("summary") for k in ours)
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-5, rtol=0, msg=key)


def test_a_sweep_gives_the_same_numbers_with_most_of_the_memory_taken(lm, monkeypatch):
    trained = SPECS["lora-split"]  # its training budget sets the share, for every sweep
    calibrate(monkeypatch, lambda: training_rows(lm, trained), BATCH)
    alone_rows = training_rows(lm, trained)
    alone = {name: sweep_numbers(lm, spec) for name, spec in SPECS.items()}
    with ballast():
        held_rows = training_rows(lm, trained)
        assert held_rows < BATCH <= alone_rows  # one piece a step alone, several held
        held = {name: sweep_numbers(lm, spec) for name, spec in SPECS.items()}
    for name in SPECS:
        assert_same(held[name], alone[name])


def test_sampled_answers_are_the_same_with_most_of_the_memory_taken(talking_model_dir, monkeypatch):
    lm = load_model(str(talking_model_dir), device="cpu", dtype=torch.float32)
    torch.manual_seed(0)
    intervention = init_intervention("vector", lm, 1)
    intervention.params["v"] = torch.randn(lm.hidden_size)
    prompts = [p for p in PROMPTS for _ in range(3)]
    m = [0.0, 2.0, -2.0] * len(PROMPTS)
    new_tokens = 10
    longest = max(
        len(lm.tokenizer(render_prompt(lm.tokenizer, p), add_special_tokens=False)["input_ids"])
        for p in PROMPTS
    )

    def rows() -> int:
        return memory.generation_rows(lm.config, lm.dtype, lm.device, longest + new_tokens)

    calibrate(monkeypatch, rows, len(prompts))
    alone_rows = rows()
    alone = generate_rows(lm, prompts, intervention, m, new_tokens, temperature=1.0, seed=5)
    with ballast():
        held_rows = rows()
        assert held_rows < len(prompts) <= alone_rows  # one batch alone, several held
        held = generate_rows(lm, prompts, intervention, m, new_tokens, temperature=1.0, seed=5)
    assert held == alone
    assert len(set(alone)) > len(PROMPTS)  # sampling and steering both show


@pytest.mark.parametrize(
    "form,objective", [("lora", "split"), ("vector", "reps"), ("local_weight", "sft")]
)
def test_micro_batches_train_as_the_whole_batch(lm, form, objective, monkeypatch):
    """A step cut into micro-batches of a pair or two (the CPU's token cap at one row) trains
    what the whole batch trains, early-stopping checks included."""
    encoded = encode_pairs(lm.tokenizer, PAIRS)
    spec = TrainSpec(form=form, layer=1, objective=Objective(objective), batch_size=BATCH, steps=8)
    holdout = encoded[-4:]
    whole = train(lm, encoded[:-4], spec, holdout=holdout)
    monkeypatch.setattr(memory, "CPU_TOKENS", 1)
    pieces = train(lm, encoded[:-4], spec, holdout=holdout)
    assert whole.meta["holdout_loss"] == pytest.approx(pieces.meta.pop("holdout_loss"), abs=1e-5)
    assert {**whole.meta, "holdout_loss": None} == {**pieces.meta, "holdout_loss": None}
    for key in whole.params:
        torch.testing.assert_close(pieces.params[key], whole.params[key], atol=1e-5, rtol=0)
