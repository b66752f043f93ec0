"""`steerfront ui`: the MLflow UI over the searches."""

from __future__ import annotations

import argparse

from steerfront.cli.args import add_output, add_tracking_uri
from steerfront.defaults import SEARCH


def add(commands: argparse._SubParsersAction) -> None:
    ui = commands.add_parser("ui", help="browse searches in the MLflow UI (binds 127.0.0.1)")
    ui.add_argument(
        "--storage",
        default=SEARCH["storage"],
        help=f"folder of searches (default: {SEARCH['storage']})",
    )
    add_tracking_uri(ui)
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    add_output(ui, '{"url": ..., "tracking_uri": ...} once the UI answers')
    ui.set_defaults(run=run, parser=ui)


def run(args: argparse.Namespace) -> None:
    from steerfront.search.tracking import serve_ui, tracking_uri

    uri = tracking_uri(args.tracking_uri, args.storage)
    serve_ui(uri, args.host, args.port, json_line=args.json, quiet=args.quiet)
