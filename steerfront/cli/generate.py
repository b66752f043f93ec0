"""`steerfront generate`: the steered model's answers beside the unsteered one."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from steerfront.cli.args import add_dtype, add_model, add_output, floats, intervention_model
from steerfront.cli.checks import check_intervention
from steerfront.errors import SteerfrontError


def add(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser(
        "generate", help="the steered model's answers beside the unsteered one"
    )
    generate.add_argument("prompt", nargs="*", help="user messages, each answered in turn")
    generate.add_argument(
        "--prompts",
        metavar="FILE",
        default=None,
        help="more user messages: a text file with one a line, or JSONL (.jsonl) with a "
        "'prompt' or 'instruction' field (default: only those given as arguments)",
    )
    generate.add_argument(
        "--intervention",
        required=True,
        help="an exported intervention: its .safetensors file or its .json sidecar",
    )
    generate.add_argument(
        "--m",
        type=floats,
        default=None,
        help="comma-separated steering strengths, each answered in one batch with the "
        "unsteered model (default: the one saved with the intervention, else 1)",
    )
    add_model(generate, intervention=True)
    generate.add_argument(
        "--max-new-tokens", type=int, default=60, help="answer length limit (default: 60)"
    )
    generate.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature; 0 answers greedily (default: 0)",
    )
    generate.add_argument(
        "--seed", type=int, default=0, help="seed of the sampling, per prompt (default: 0)"
    )
    add_output(generate, "the answers", progress=False)
    add_dtype(generate)

    generate.set_defaults(run=run, parser=generate)


def run(args: argparse.Namespace) -> None:
    from steerfront.lm import load_model
    from steerfront.methods.generate import generate
    from steerfront.methods.io import load_intervention, read_sidecar
    from steerfront.scoring.evaluate import check_grid

    prompts = [*args.prompt, *(read_prompts(Path(args.prompts)) if args.prompts else [])]
    if not prompts:
        raise SteerfrontError("no prompt: give one or more as arguments, or --prompts FILE")
    if args.max_new_tokens < 1:
        raise SteerfrontError(f"--max-new-tokens must be at least 1, not {args.max_new_tokens}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise SteerfrontError(f"--temperature must be 0 (greedy) or more, not {args.temperature}")
    sidecar = read_sidecar(args.intervention)
    try:
        saved = sidecar["meta"].get("m", 1.0)
        ms = check_grid(saved if args.m is None else args.m).tolist()
    except SteerfrontError as err:
        raise SteerfrontError(f"--m: {err}") from None
    model = intervention_model(args.intervention, sidecar, args.model)
    check_intervention(args.intervention, model)  # before the model loads
    lm = load_model(model, dtype=args.dtype)
    intervention = load_intervention(args.intervention, lm)
    answers = []
    for prompt in prompts:
        unsteered, steered = generate(
            lm, prompt, intervention, ms, args.max_new_tokens, args.temperature, args.seed
        )
        answers.append(
            {
                "prompt": prompt,
                "unsteered": unsteered,
                "steered": [{"m": m, "text": text} for m, text in zip(ms, steered, strict=True)],
            }
        )
    if args.json:
        what = {"model": lm.spec, "intervention": args.intervention, "form": intervention.form}
        settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
        what.update(layer=intervention.layer, **settings, seed=args.seed, prompts=answers)
        print(json.dumps(what))
        return
    where = f"{intervention.form} at layer {intervention.layer}"
    for number, answer in enumerate(answers):
        print(("\n" if number else "") + f"prompt: {answer['prompt']}\n")
        print(f"unsteered:\n{answer['unsteered']}")
        for steered in answer["steered"]:
            print(f"\nsteered ({where}, m = {steered['m']:g}):\n{steered['text']}")


def read_prompts(path: Path) -> list[str]:
    """User messages from `path`: JSONL (a `.jsonl` file) with a 'prompt' or 'instruction'
    field per record, else plain text with one message a line; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SteerfrontError(f"--prompts {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SteerfrontError(f"--prompts {path}: not a readable text file ({exc})") from None
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix.lower() != ".jsonl":
            prompts.append(line.strip())
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SteerfrontError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        fields = record if isinstance(record, dict) else {}
        text = fields.get("prompt", fields.get("instruction"))
        if not isinstance(text, str) or not text.strip():
            raise SteerfrontError(
                f"{path}:{number}: expected an object with a non-empty 'prompt' or "
                "'instruction' string"
            )
        prompts.append(text)
    if not prompts:
        raise SteerfrontError(f"--prompts {path}: no prompts in file")
    return prompts
