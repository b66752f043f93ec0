"""`steerfront export`: an intervention, at its `m`, in the format a serving engine loads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steerfront.cli.args import add_dtype, add_output, add_storage, describe, search_store
from steerfront.cli.checks import check_intervention, check_out
from steerfront.defaults import DEFAULT_MODEL, EXPORT_FORMATS
from steerfront.errors import SteerfrontError
from steerfront.search.storage import Store


def add(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="write an intervention where people serve models: llama.cpp control vector, "
        "PEFT adapter, or a merged model folder",
    )
    export.add_argument(
        "source",
        help="an intervention file (.safetensors with its .json sidecar), or a search name "
        "(or folder): its best point, or the one --point names",
    )
    export.add_argument(
        "--to",
        required=True,
        choices=EXPORT_FORMATS,
        help="gguf: llama.cpp control vector (vector form; EasySteer reads it too); peft: "
        "PEFT LoRA adapter (lora); merged: Hugging Face folder with the change in its weights "
        "(all forms)",
    )
    export.add_argument(
        "--m",
        type=float,
        default=None,
        help="steering strength (default: the search point's, else the one saved with the "
        "intervention, else 1)",
    )
    export.add_argument(
        "--out",
        default=None,
        help="new or empty output folder, unless --force (default: beside the source, "
        "SEARCH/export-FORMAT or FILE's folder/STEM-FORMAT)",
    )
    export.add_argument(
        "--point",
        type=int,
        default=None,
        help="for a search: the N-th point of its front, as `steerfront front` lists them, "
        "counting from 1 (default: the point `steerfront best` picks by default)",
    )
    export.add_argument(
        "--plain",
        action="store_true",
        help="for a search: pick from, or count --point on, the plain front (default: the "
        "extended front)",
    )
    add_storage(export)
    export.add_argument(
        "--model",
        default=None,
        help="model (default: the one the intervention or search was made for)",
    )
    add_dtype(export)
    export.add_argument(
        "--force",
        action="store_true",
        help="replace an output folder that holds anything (default: refuse it)",
    )
    add_output(export, "what was exported, and where", progress=False)
    export.set_defaults(run=run, parser=export)


def run(args: argparse.Namespace) -> None:
    from steerfront.lm import load_model
    from steerfront.methods.export import FORMATS, export, format_refusal
    from steerfront.methods.io import load_intervention, read_sidecar
    from steerfront.search.run import STATE

    store, record = None, None
    path = intervention_file(args.source)
    if path is None:
        store, record, path = search_point(args)
        model = json.loads((store.local / STATE).read_text())["settings"]["model"]
    else:
        if args.point is not None:
            raise SteerfrontError(f"--point: {args.source} is an intervention file, not a search")
        model = read_sidecar(path).get("model") or DEFAULT_MODEL
    model = args.model or model
    # Everything the files and the model's configuration tell, before the model loads.
    sidecar = check_intervention(path, model)
    problem = format_refusal(sidecar["form"], sidecar["layer"], args.to)
    if problem:
        raise SteerfrontError(problem)
    if args.out:
        out = Path(args.out)
    elif store is not None:
        out = store.local / f"export-{args.to}"
    else:
        out = path.with_name(f"{path.name.removesuffix('.safetensors')}-{args.to}")
    check_out(out, args.force)
    lm = load_model(model, dtype=args.dtype)
    intervention = load_intervention(path, lm)
    m = args.m
    if m is None:
        m = record["m"] if record else float(intervention.meta.get("m", 1.0))
    export(intervention, lm, args.to, out, m, replace=args.force)
    if store is not None and not args.out:
        store.push(out.name)
    names = sorted(p.name for p in out.iterdir())
    if args.json:
        document = {
            "out": str(out),
            "to": args.to,
            "form": intervention.form,
            "layer": intervention.layer,
            "m": m,
            "files": names,
            "serve": str(out / "SERVE.md"),
            "point": record,
        }
        print(json.dumps(document, default=str))
        return
    if record:
        print(f"point: {describe(record)}")
    print(
        f"exported {intervention.form} at layer {intervention.layer}, m {m:g}, as {args.to} "
        f"({', '.join(FORMATS[args.to])}) to {out}/: {', '.join(names)}"
    )
    print(f"how to serve it: {out / 'SERVE.md'}")


def intervention_file(source: str) -> Path | None:
    """The intervention's tensor file if `source` names one (with or without its suffix)."""
    path = Path(source).expanduser()
    stem = path.name.removesuffix(".safetensors")
    tensors = path.with_name(stem + ".safetensors")
    if path.name.endswith(".safetensors") or tensors.is_file() and not path.is_dir():
        return tensors
    return None


def search_point(args: argparse.Namespace) -> tuple[Store, dict, Path]:
    """The search, the front point to export, and its trained intervention's file."""
    from steerfront.search.best import pick, read_front
    from steerfront.search.trial import cached

    store = search_store(args.source, args.storage)
    rows = read_front(store.local, extended=not args.plain)
    if args.point is None:
        record = pick(rows)
    elif 1 <= args.point <= len(rows):
        record = rows[args.point - 1]
    else:
        kind = "plain" if args.plain else "extended"
        raise SteerfrontError(
            f"--point {args.point}: the {kind} front of {args.source!r} has {len(rows)} points "
            f"(1..{len(rows)}; see steerfront front {args.source})"
        )
    return store, record, cached(store, record["train_key"], required=True)
