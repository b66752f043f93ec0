"""Where a search keeps its files: a local or shared (NFS) folder, or an object store.

With an object-store URI (`s3://bucket/runs`, `gs://bucket/runs`) every machine works in a
local mirror of the search's folder, written exactly as a local folder would be, and copies
files to and from the store: the driver uploads what it writes, and trials fetch trained
interventions from the store's cache and publish new ones there, so all nodes share them.
pyarrow.fs talks to the store; credentials and endpoints come from the usual environment
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `GOOGLE_APPLICATION_CREDENTIALS`, ...).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from steerfront.errors import SteerfrontError
from steerfront.files import write_atomic

MIN_FREE_BYTES = 256 * 2**20  # trained interventions, results, Ray state


def is_uri(location: str) -> bool:
    return "://" in location


class Store:
    """One search's folder: `local` on this machine and, for an object store, `uri`."""

    def __init__(self, storage: str, name: str) -> None:
        self.name = name
        if not is_uri(storage):
            self.uri, self.local = None, Path(storage).resolve() / name
            return
        import pyarrow
        import pyarrow.fs as pafs

        from steerfront.lm import cache_dir

        self.uri = f"{storage.rstrip('/')}/{name}"
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        except (pyarrow.ArrowInvalid, OSError, ValueError) as exc:
            raise SteerfrontError(f"storage {storage}: {str(exc).splitlines()[0]}") from None
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", self.uri.split("?")[0])[-80:]
        digest = hashlib.sha256(self.uri.encode()).hexdigest()[:8]
        self.local = cache_dir() / "storage" / f"{readable}-{digest}"

    def check_writable(self) -> None:
        """Refuse a folder (or store) that cannot take a search's files."""
        folder = self.local.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-probe-{os.getpid()}"
            probe.write_bytes(b"x" * 1024)
            probe.unlink()
            free = shutil.disk_usage(folder).free
        except OSError as exc:
            raise SteerfrontError(
                f"storage folder {folder} is not writable ({exc.strerror})"
            ) from None
        if free < MIN_FREE_BYTES:
            raise SteerfrontError(
                f"storage folder {folder} has {free // 2**20} MiB free; a search needs at least "
                f"{MIN_FREE_BYTES // 2**20} MiB (trained interventions, results, Ray state)"
            )
        if self.uri is not None:
            self._call(self._probe, f"{self.root}/.write-probe-{os.getpid()}")

    def push(self, *names: str) -> None:
        """Upload these files or folders (relative to the search's folder) to the store."""
        if self.uri is None:
            return
        for name in names:
            path = self.local / name
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                if file.is_file():
                    self._call(self._upload, file)

    def pull(self, *names: str) -> bool:
        """Download these files from the store (those it has); True if all were there."""
        if self.uri is None:
            return all((self.local / name).exists() for name in names)
        return all(self._call(self._download, name) for name in names)

    def _upload(self, file: Path) -> bool:
        key = f"{self.root}/{file.relative_to(self.local).as_posix()}"
        with self.fs.open_output_stream(key) as out:
            out.write(file.read_bytes())
        return True

    def _probe(self, key: str) -> bool:
        with self.fs.open_output_stream(key) as out:
            out.write(b"x")
        self.fs.delete_file(key)
        return True

    def _download(self, name: str) -> bool:
        import pyarrow.fs as pafs

        key = f"{self.root}/{name}"
        if self.fs.get_file_info(key).type != pafs.FileType.File:
            return False
        target = self.local / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open_input_stream(key) as source:
            write_atomic(target, source.read())
        return True

    def _call(self, action: Callable[[object], bool], arg: object) -> bool:
        try:
            return action(arg)
        except OSError as exc:
            raise SteerfrontError(f"storage {self.uri}: {str(exc).splitlines()[0]}") from None
