"""`steerfront layers`: every layer's generation-free priors (navigator, lens, DiffMean gain at
a fixed kl) from one pass over the training pairs, and the layers to search first."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from steerfront.cli.args import add_concept, add_dtype, add_model, add_output, floats, ints
from steerfront.cli.checks import check_out, model_config
from steerfront.defaults import PRIORS, SEARCH
from steerfront.errors import SteerfrontError


def add(commands: argparse._SubParsersAction) -> None:
    layers = commands.add_parser(
        "layers",
        help="score every layer (navigator, logit lens, DiffMean gain at a fixed kl) and "
        "recommend where to steer",
    )
    add_model(layers)
    add_dtype(layers)
    add_concept(layers)
    layers.add_argument(
        "--layers",
        type=ints,
        default=None,
        help="comma-separated layers to score (default: every layer)",
    )
    layers.add_argument(
        "--top",
        type=int,
        default=PRIORS["top"],
        help=f"how many layers to recommend (default: {PRIORS['top']})",
    )
    lo, hi = PRIORS["window"]
    layers.add_argument(
        "--window",
        type=floats,
        default=[lo, hi],
        help="recommend only layers from LO·L to HI·L, as fractions of the layer count L; "
        f"0,1 allows every layer (default: {lo:g},{hi:g})",
    )
    layers.add_argument(
        "--kl",
        type=float,
        default=PRIORS["kl"],
        help="kl (nats per token, on neutral prompts) at which each layer's DiffMean gain is "
        f"measured (default: {PRIORS['kl']:g})",
    )
    layers.add_argument(
        "--gain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure each layer's DiffMean test gain at the fixed kl (the slow part; "
        "--no-gain skips it; default: on)",
    )
    layers.add_argument(
        "--seed",
        type=int,
        default=SEARCH["seed"],
        help=f"seed of the train/val/test split, as the search splits (default: {SEARCH['seed']})",
    )
    layers.add_argument(
        "--out",
        default=None,
        help="new or empty output folder for layers.json and layers.png "
        "(default: runs/layers-CONCEPT)",
    )
    layers.add_argument(
        "--force",
        action="store_true",
        help="replace an output folder that holds anything (default: refuse it)",
    )
    add_output(layers, "the results as one JSON document")
    layers.set_defaults(run=run, parser=layers)


def run(args: argparse.Namespace) -> None:
    from steerfront.data import encode_pairs, load_concept
    from steerfront.scoring.priors import check_layers, window_layers

    if args.top < 1:
        raise SteerfrontError(f"--top must be at least 1, not {args.top}")
    if len(args.window) != 2:
        raise SteerfrontError(f"--window takes two fractions LO,HI, not {len(args.window)}")
    if args.gain and not 0 < args.kl < float("inf"):
        raise SteerfrontError(f"--kl must be a positive number of nats, not {args.kl}")
    pairs = load_concept(args.concept, args.format)
    splits = pairs.split(SEARCH["val_fraction"], SEARCH["test_fraction"], args.seed)
    if not len(splits.train) or (args.gain and not len(splits.test)):
        raise SteerfrontError(
            f"concept {pairs.name!r}: {len(pairs)} pairs leave no train or test pairs"
        )
    # What the flags and the model's configuration tell is checked before the model loads.
    n_layers = model_config(args.model).num_hidden_layers
    window = tuple(args.window)
    try:
        window_layers(n_layers, window)
    except SteerfrontError as err:
        raise SteerfrontError(f"--window: {err}") from None
    layers = check_layers(args.layers, n_layers, flag="--layers")
    out = Path(args.out or f"runs/layers-{pairs.name}")
    check_out(out, args.force)
    progress = not args.quiet and not args.json

    from steerfront.files import staged_dir
    from steerfront.models import load_checked
    from steerfront.scoring.priors import layer_scores, plot_layers

    clock = time.perf_counter()
    lm = load_checked(args.model, dtype=args.dtype)
    load_s = time.perf_counter() - clock
    if progress:
        print(
            f"layers: {lm.spec}, concept {pairs.name} ({len(splits.train)} train / "
            f"{len(splits.test)} test pairs), {len(layers)} layers"
            + (f", gain at kl {args.kl:g}" if args.gain else ", no gain"),
            file=sys.stderr,
        )
    clock = time.perf_counter()
    train = encode_pairs(lm.tokenizer, splits.train)
    test = encode_pairs(lm.tokenizer, splits.test) if args.gain else None
    scores = layer_scores(
        lm, train, test, layers, top=args.top, window=window, kl=args.kl, progress=progress
    )
    scores.seconds.update(load=load_s, scores=time.perf_counter() - clock)
    document = {
        "model": lm.spec,
        "concept": pairs.name,
        "train_pairs": len(splits.train),
        "test_pairs": len(splits.test),
        "out": str(out),
        **scores.document(),
    }
    with staged_dir(out, replace=True) as folder:
        (folder / "layers.json").write_text(json.dumps(document, indent=2))
        plot_layers(scores, f"{lm.spec} · {pairs.name}", folder / "layers.png")
    if args.json:
        print(json.dumps(document))
        return
    from steerfront.cli.report import print_layers

    print_layers(document)
