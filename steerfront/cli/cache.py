"""`steerfront cache list|clear`: what the cache folder holds, and room made in it."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from steerfront.cli.args import add_output
from steerfront.files import cache_dir


def add(commands: argparse._SubParsersAction) -> None:
    cache = commands.add_parser(
        "cache",
        help="list or clear the cache: converted models and kernel choices (STEERFRONT_CACHE, "
        "else ~/.cache/steerfront)",
    )
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    listing = cache_commands.add_parser("list", help="converted models and kernel choices, sizes")
    add_output(listing, "the list", progress=False)
    listing.set_defaults(run=list_cache, parser=listing)
    clear = cache_commands.add_parser(
        "clear",
        help="delete converted models and kernel choices (each is made again when next "
        "needed); object-store mirrors are left alone",
    )
    clear.add_argument("--models", action="store_true", help="only the converted models")
    clear.add_argument("--kernels", action="store_true", help="only the kernel choices")
    add_output(clear, "what was removed", progress=False)
    clear.set_defaults(run=clear_cache, parser=clear)


def contents() -> dict:
    """The cache folder's converted models and kernel choices, and the size of the rest."""
    root = cache_dir()
    models = [
        {"name": path.name, "bytes": size(path), "sha256": _field(path / "source.json", "sha256")}
        for path in _entries(root / "models")
    ]
    kernels = [
        {
            "name": path.stem,
            "bytes": size(path),
            "kernel": _field(path, "kernel"),
            "cpu": _field(path, "cpu"),
            "torch": _field(path, "torch"),
            "width": _width(path),
        }
        for path in _entries(root / "kernels")
    ]
    return {
        "cache": str(root),
        "models": models,
        "kernels": kernels,
        "storage_bytes": size(root / "storage"),
    }


def list_cache(args: argparse.Namespace) -> None:
    found = contents()
    if args.json:
        print(json.dumps(found))
        return
    models, kernels = found["models"], found["kernels"]
    print(f"cache {found['cache']}")
    print(f"models: {len(models)}, {human(sum(m['bytes'] for m in models))}")
    for model in models:
        source = f"GGUF sha256 {model['sha256'][:16]}" if model["sha256"] else "keyed by mtime"
        print(f"  {model['name']:<44} {human(model['bytes']):>8}  {source}")
    print(f"kernel choices: {len(kernels)}, {human(sum(k['bytes'] for k in kernels))}")
    for kernel in kernels:  # one per CPU, torch version and model shape (timed on its shapes)
        width = f"models of width {kernel['width']}" if kernel["width"] else "unknown shapes"
        print(
            f"  {kernel['name']:<16} {kernel['kernel']:<7} {width}, {kernel['cpu']}, "
            f"torch {kernel['torch']}"
        )
    print(f"object-store mirrors: {human(found['storage_bytes'])} (not cleared by `cache clear`)")


def clear_cache(args: argparse.Namespace) -> None:
    root = cache_dir()
    both = not (args.models or args.kernels)
    done, removed = [], {}
    for name, chosen in (("models", args.models), ("kernels", args.kernels)):
        if chosen or both:
            area = root / name
            removed[name] = {"count": len(_entries(area)), "bytes": size(area)}
            done.append(f"{len(_entries(area))} {name} ({human(size(area))})")
            if area.exists():  # hidden entries too: what an interrupted conversion left
                shutil.rmtree(area)
    if args.json:
        print(json.dumps({"cache": str(root), "removed": removed}))
        return
    print(f"removed {' and '.join(done)} from {root}")


def _entries(folder: Path) -> list[Path]:
    """An area's entries, without the hidden ones (work in progress)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _width(path: Path) -> int | None:
    """The model width a kernel choice was timed for: the input size most of its linear shapes
    share (a decoder's hidden size)."""
    try:
        shapes = json.loads(path.read_text())["shapes"]
        inputs = [int(shape[1]) for shape in shapes]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return max(sorted(set(inputs)), key=inputs.count) if inputs else None


def _field(path: Path, name: str) -> str | None:
    try:
        value = json.loads(path.read_text())[name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 if there is none)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human(count: float) -> str:
    """Bytes in decimal units (as `du --si` counts them), three digits."""
    for unit in ("B", "kB", "MB"):
        if count < 1000:
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:.3g} GB"
