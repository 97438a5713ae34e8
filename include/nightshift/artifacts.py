"""The artifact store: one path abstraction over a local folder or object storage.

Data moves between tasks through here, never through XCom. The root is a local path
(the demo) or any fsspec URL such as s3://bucket/prefix (the deployed stack, with s3fs
installed); the code above it does not care which.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec

log = logging.getLogger(__name__)

# A local put writes `<target>.tmp-<pid>` and renames it; a writer killed in between leaves that file.
TMP_SUFFIX = re.compile(r"\.tmp-(\d+)$")
# A temp file of a process that is gone (on this host) is removed once it has not changed for this
# long: the folder may be shared with another host, whose live writer's pid means nothing here, and
# a live write keeps touching its file.
TMP_DEAD_GRACE_SECONDS = 10 * 60
# Whatever its pid, a temp file untouched this long is left over (pids are reused).
TMP_MAX_AGE_SECONDS = 6 * 3600


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
            remove_stale_tmp(self.fs._parent(target))
            tmp = f"{target}.tmp-{os.getpid()}"
            try:
                shutil.copyfile(local_path, tmp)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)  # a failed write leaves nothing behind
                raise
        else:
            self.fs.put_file(str(local_path), target)
        return url

    def sha256(self, url: str) -> str:
        """The SHA-256 of a stored file's bytes (read in blocks: a snapshot can be large)."""
        digest = hashlib.sha256()
        with self.fs.open(self._path(url), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

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


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _stale_tmp(path: Path, now: float) -> bool:
    match = TMP_SUFFIX.search(path.name)
    if not match:
        return False
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return False  # renamed or removed by its writer meanwhile
    if age > TMP_MAX_AGE_SECONDS:
        return True
    return age > TMP_DEAD_GRACE_SECONDS and not _pid_alive(int(match.group(1)))


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Remove the `*.tmp-<pid>` files a killed writer left in a local folder; the paths removed.

    Only files that cannot belong to a write in progress: their process is gone and the file has not
    changed for TMP_DEAD_GRACE_SECONDS, or it has not changed for TMP_MAX_AGE_SECONDS whatever its pid.
    """
    now, removed = time.time(), []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in Path(folder).iterdir():
            if _stale_tmp(path, now):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
                    log.warning("removed %s, left by a write that did not finish", path)
    return removed


def safe_name(run_id: str) -> str:
    """A run id as a file name in the store (Airflow run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


REPORTS = "reports"  # the store's folder of pages for people (served by the Airflow plugin's web app)
RUN_INDEX = "nights.json"  # reports/<dataset>/nights.json: each night's status and runs (report_index.py)
DRY_RUNS = "dry_runs"  # dry_runs/<dataset>/<day>/<run>/: what a dry run keeps instead of registering it


def run_folder(dataset: str, day: dt.date | str, dag_run_id: str, top: str = REPORTS) -> tuple[str, ...]:
    """The key parts of one DAG run's folder for one night: `<top>/<dataset>/<day>/<run>`, the run id
    made safe for a path (safe_name).

    Per run, not per night: a rerun or a dry run of a night writes beside the run that published it,
    never over it, so an older run's report links keep showing that run's pages."""
    return (top, dataset, day.isoformat() if isinstance(day, dt.date) else str(day), safe_name(dag_run_id))
