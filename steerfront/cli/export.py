"""`steerfront export`: an intervention, at its `m`, in the format a serving engine loads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from steerfront.cli.args import (
    add_dtype,
    add_output,
    add_storage,
    search_budget,
    search_state,
    search_store,
)
from steerfront.cli.checks import check_intervention, check_out
from steerfront.cli.report import describe
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
        help="an intervention file (.safetensors or its .json sidecar), or a search name "
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
        "--force",
        action="store_true",
        help="replace a non-empty output folder; for a search, also export a point that does "
        "not beat the unsteered model on test preference (or whose verdict is unknown), as "
        "`steerfront best --force` does",
    )
    export.add_argument(
        "--model",
        default=None,
        help="model (default: the one the intervention or search was made for)",
    )
    add_dtype(export)
    add_output(export, "what was exported, and where", progress=False)
    export.set_defaults(run=run, parser=export)


def run(args: argparse.Namespace) -> int:
    """Exit status 1 when a search's point does not beat the unsteered model (nothing
    exported), as `best`."""
    from steerfront.lm import load_model
    from steerfront.methods.export import FORMATS, export, format_refusal
    from steerfront.methods.io import load_intervention, read_sidecar
    from steerfront.search.best import assess, verdict, without_pairs

    store, record = None, None
    path = intervention_file(args.source)
    if path is None:
        store, record, path, state = search_point(args)
        model = state["settings"]["model"]
        assessment = assess(record, state["setup"], search_budget(state, None))
        if not assessment["beats_baseline"] and not args.force:
            if args.json:
                doc = {"exported": False, "point": without_pairs(record), **assessment}
                print(json.dumps(doc, default=str))
                return 1
            print(f"point: {describe(record)}")
            print(verdict(assessment))
            print("nothing exported (pass --force to export it anyway)")
            return 1
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
            "point": record and without_pairs(record),
        }
        print(json.dumps({"exported": True, **document}, default=str))
        return 0
    if record:
        print(f"point: {describe(record)}")
    print(
        f"exported {intervention.form} at layer {intervention.layer}, m {m:g}, as {args.to} "
        f"({', '.join(FORMATS[args.to])}) to {out}/: {', '.join(names)}"
    )
    print(f"how to serve it: {out / 'SERVE.md'}")
    return 0


def intervention_file(source: str) -> Path | None:
    """The intervention's tensor file if `source` names one (the tensors, its JSON sidecar,
    or the two without a suffix)."""
    path = Path(source).expanduser()
    suffix = next((s for s in (".safetensors", ".json") if path.name.endswith(s)), "")
    tensors = path.with_name(path.name.removesuffix(suffix) + ".safetensors")
    if not path.is_dir() and (suffix or tensors.is_file()):
        return tensors
    return None


def search_point(args: argparse.Namespace) -> tuple[Store, dict, Path, dict]:
    """The search, the front point to export (by default the one `best` picks, with the
    search's own --max-util-drop), its trained intervention's file, and the search's state."""
    from steerfront.search.best import pick, read_front
    from steerfront.search.trial import cached

    store = search_store(args.source, args.storage)
    state = search_state(store)
    rows = read_front(store.local, extended=not args.plain)
    if args.point is None:
        record = pick(rows, max_util_drop=search_budget(state, None))
    elif 1 <= args.point <= len(rows):
        record = rows[args.point - 1]
    else:
        kind = "plain" if args.plain else "extended"
        raise SteerfrontError(
            f"--point {args.point}: the {kind} front of {args.source!r} has {len(rows)} points "
            f"(1..{len(rows)}; see steerfront front {args.source})"
        )
    return store, record, cached(store, record["train_key"], required=True), state
