"""`steerfront generate`: the steered model's answer beside the unsteered one."""

from __future__ import annotations

import argparse

from steerfront.cli.args import add_dtype
from steerfront.defaults import DEFAULT_MODEL


def add(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser(
        "generate", help="the steered model's answer beside the unsteered one"
    )
    generate.add_argument("prompt", help="the user's message")
    generate.add_argument(
        "--intervention",
        required=True,
        help="an exported intervention (.safetensors with its .json sidecar)",
    )
    generate.add_argument(
        "--m",
        type=float,
        default=None,
        help="steering strength (default: the one saved with the intervention, else 1)",
    )
    generate.add_argument(
        "--model", default=None, help="model (default: the one the intervention was made for)"
    )
    generate.add_argument(
        "--max-new-tokens", type=int, default=60, help="answer length limit (default: 60)"
    )
    add_dtype(generate)

    generate.set_defaults(run=run, parser=generate)


def run(args: argparse.Namespace) -> None:
    from steerfront.lm import load_model
    from steerfront.methods.generate import generate
    from steerfront.methods.io import load_intervention, read_sidecar

    sidecar = read_sidecar(args.intervention)
    lm = load_model(args.model or sidecar.get("model") or DEFAULT_MODEL, dtype=args.dtype)
    intervention = load_intervention(args.intervention, lm)
    m = args.m if args.m is not None else sidecar.get("meta", {}).get("m", 1.0)
    unsteered, steered = generate(lm, args.prompt, intervention, m, args.max_new_tokens)
    print(
        f"unsteered:\n{unsteered}\n\n"
        f"steered ({intervention.form} at layer {intervention.layer}, m = {m:g}):\n{steered}"
    )
