"""Writing outputs so that an interruption never leaves a half-written file or folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """Where converted models and kernel choices live: `STEERFRONT_CACHE`, else
    `~/.cache/steerfront`."""
    return Path(os.environ.get("STEERFRONT_CACHE", Path.home() / ".cache" / "steerfront"))


def sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary name beside `path`, then rename: readers (other workers, a
    later resume) never see half a file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(data)
    temp.replace(path)


def open_mode(path: Path) -> None:
    """Give a temporary file or folder (created private: 0600, 0700) the mode of any other
    result (0644, 0755 under the usual umask), so the group can read what it becomes."""
    mask = os.umask(0)
    os.umask(mask)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


@contextmanager
def staged_dir(target: Path, replace: bool = False) -> Iterator[Path]:
    """A temporary folder beside `target`, moved onto it only if the body succeeds.

    With `replace`, an existing `target` is swapped out; otherwise a finished `target` that
    appeared meanwhile (another process won the race) is kept.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        for path in [staging, *staging.rglob("*")]:  # safetensors writes its files 0600
            if not path.is_symlink():
                open_mode(path)
        if replace and target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            target.rename(old / target.name)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                staging.rename(target)
            except OSError:
                if not target.exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
