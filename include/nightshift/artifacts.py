"""The artifact store: one path abstraction over a local folder or object storage.

Data moves between tasks through here, never through XCom. The root is a local path
(the demo) or any fsspec URL such as s3://bucket/prefix (the deployed stack, with s3fs
installed); the code above it does not care which.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import fsspec


class ArtifactStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = str(root).rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.root)

    def url(self, *parts: str) -> str:
        """The full address of a key, as a string other tasks can be given."""
        return "/".join([self.root, *(p.strip("/") for p in parts)])

    def _path(self, url: str) -> str:
        return self.fs._strip_protocol(url)

    def exists(self, url: str) -> bool:
        return self.fs.exists(self._path(url))

    def put_file(self, local_path: str | os.PathLike, url: str) -> str:
        """Copy a finished local file in; the write is all-or-nothing for readers (temp name, then move)."""
        target = self._path(url)
        self.fs.makedirs(self.fs._parent(target), exist_ok=True)
        if self._is_local():
            tmp = f"{target}.tmp-{os.getpid()}"
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, target)
        else:
            self.fs.put_file(str(local_path), target)
        return url

    def put_text(self, text: str, url: str) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".tmp", delete=False) as handle:
            handle.write(text)
        try:
            return self.put_file(handle.name, url)
        finally:
            os.unlink(handle.name)

    def read_text(self, url: str) -> str:
        with self.fs.open(self._path(url), "r") as handle:
            return handle.read()

    def open(self, url: str, mode: str = "rb"):
        return self.fs.open(self._path(url), mode)

    def list(self, url: str) -> list[str]:
        path = self._path(url)
        if not self.fs.exists(path):
            return []
        return sorted(self.fs.ls(path, detail=False))

    @contextlib.contextmanager
    def local_copy(self, url: str) -> Iterator[Path]:
        """A local path for a library that wants one (a no-op for a local store)."""
        if self._is_local():
            yield Path(self._path(url))
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(url).name
            self.fs.get_file(self._path(url), str(local))
            yield local

    @contextlib.contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A scratch folder for files that are put into the store when finished."""
        with tempfile.TemporaryDirectory(prefix="nightshift-") as tmp:
            yield Path(tmp)

    def _is_local(self) -> bool:
        protocol = self.fs.protocol
        return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))


def safe_name(run_id: str) -> str:
    """A run id as a file name in the store (Airflow run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
