"""Backup and restore of an edge data dir, consistent while the agent serves.

A backup is one tar archive (gzip when the name ends in ``.gz``/``.tgz``):

- ``backup.json`` first: format, when, from where, and every file with its size and sha256;
- each SQLite database (``aivos.db``, ``knowledge/meta.sqlite``, any file with the SQLite
  header) copied through SQLite's online backup API in one step: a consistent snapshot
  taken from a read transaction, while the agent's writer goes on (WAL);
- the knowledge index files, copied under the index's writer lock (the one `aivos kb add`
  and the agent take), so the index, its manifest and ``meta.sqlite`` are of one
  generation; a mismatch would only make the next start rebuild the index from meta;
- everything else small and durable: settings, secrets, fleet state, trusted keys and the
  active-bundle pointer (``bundles/ACTIVE``). Installed bundle files are left out unless
  ``with_bundles`` (the fleet can send them again; the pointer falls back to the
  configured bundle when its target is missing).

Never copied: ``-wal``/``-shm``/``-journal`` files (the snapshot has their content),
lock files, dot-files (temporary files of atomic writes), ``logs/``, ``fleet/downloads/``.

Restore refuses a non-empty data dir unless ``force``; it extracts into a staging dir
beside the target, checks every file's sha256 and that nothing is missing or extra, and
only then swaps the staging dir in: a bad archive leaves the data dir as it was.

Both take an optional `progress(stage, done_bytes, total_bytes)` callback: stages
``copy`` (snapshots and files into the staging dir) and ``archive`` (writing the tar) for a
backup, ``extract`` for a restore. It is called after each file and, while a large file is
archived or extracted, every few MiB (`aivos backup` shows it as a progress display).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import msgspec

from aivos.edge.store.db import db_path
from aivos.shared import __version__
from aivos.shared.errors import Conflict, DataError
from aivos.shared.filelock import exclusive
from aivos.shared.sqlite import open_reader

__all__ = [
    "BackupCorrupt",
    "BackupFile",
    "BackupManifest",
    "ProgressFn",
    "RestoreRefused",
    "create_backup",
    "read_manifest",
    "restore_backup",
]

MANIFEST_NAME = "backup.json"
FORMAT = 1
_SQLITE_HEADER = b"SQLite format 3\x00"
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal")
_SKIP_DIRS = ("logs", "fleet/downloads")
_KNOWLEDGE = "knowledge"
_CHUNK = 4 << 20

ProgressFn = Callable[[str, int, int], None]  # (stage, bytes done, bytes total)


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


class _Counted:
    """A file read through by `tar.addfile`, reporting each read's byte count."""

    def __init__(self, fh: io.BufferedReader, on_read: Callable[[int], None]) -> None:
        self._fh, self._on_read = fh, on_read

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._on_read(len(data))
        return data


class BackupCorrupt(DataError):
    """The archive is not a backup, or a file in it does not match the manifest."""

    code = "backup_corrupt"


class RestoreRefused(Conflict):
    """The target data dir has content and `force` was not given."""

    code = "restore_refused"


class BackupFile(msgspec.Struct, frozen=True):
    path: str  # relative, POSIX
    size: int
    sha256: str
    kind: str = "file"  # "sqlite" when taken with the online backup API


class BackupManifest(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    created_at: float
    aivos_version: str
    source: str
    files: list[BackupFile]
    with_bundles: bool = False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_sqlite(path: Path) -> bool:
    with contextlib.suppress(OSError), path.open("rb") as fh:
        return fh.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    return False


def _wanted(rel: PurePosixPath, with_bundles: bool) -> bool:
    text = rel.as_posix()
    if any(part.startswith(".") for part in rel.parts) or rel.name == "lock":
        return False
    if text.endswith(_SKIP_SUFFIXES):
        return False
    if any(text == d or text.startswith(d + "/") for d in _SKIP_DIRS):
        return False
    # installed bundles: the pointer (bundles/ACTIVE) always, the files only when asked
    return with_bundles or rel.parts[0] != "bundles" or rel.as_posix() == "bundles/ACTIVE"


def _files(data_dir: Path, with_bundles: bool) -> list[PurePosixPath]:
    found = []
    for root, dirs, names in os.walk(data_dir):
        dirs.sort()
        for name in sorted(names):
            path = Path(root, name)
            rel = PurePosixPath(path.relative_to(data_dir).as_posix())
            if path.is_file() and not path.is_symlink() and _wanted(rel, with_bundles):
                found.append(rel)
    return found


@contextlib.contextmanager
def _knowledge_lock(data_dir: Path) -> Iterator[None]:
    """The index's writer lock (see edge/knowledge/index.py), when there is an index."""
    lock = data_dir / _KNOWLEDGE / "lock"
    if not lock.parent.is_dir():
        yield
        return
    with exclusive(lock, "knowledge index writer"):
        yield


def _snapshot_sqlite(source: Path, target: Path) -> None:
    """SQLite's online backup, all pages in one step: one read transaction, so the copy is
    the database as of one commit, and WAL writers are not blocked meanwhile."""
    src = open_reader(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _copy(data_dir: Path, staging: Path, rel: PurePosixPath) -> BackupFile:
    source, target = data_dir / rel, staging / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    kind = "sqlite" if _is_sqlite(source) else "file"
    if kind == "sqlite":
        _snapshot_sqlite(source, target)
    else:
        shutil.copyfile(source, target)
    return BackupFile(rel.as_posix(), target.stat().st_size, _sha256(target), kind)


def _stage(
    data_dir: Path, staging: Path, with_bundles: bool, progress: ProgressFn
) -> list[BackupFile]:
    rels = _files(data_dir, with_bundles)
    total = sum((data_dir / r).stat().st_size for r in rels)  # a snapshot may differ a little
    done = 0
    progress("copy", 0, total)

    def copy(rel: PurePosixPath) -> BackupFile:
        nonlocal done
        entry = _copy(data_dir, staging, rel)
        done += entry.size
        progress("copy", min(done, max(total - 1, 0)), total)  # "done" only once all are
        return entry

    index = [r for r in rels if r.parts[0] == _KNOWLEDGE]
    files = [copy(r) for r in rels if r.parts[0] != _KNOWLEDGE]
    with _knowledge_lock(data_dir):  # held only while the index files are copied
        files += [copy(r) for r in index]
    progress("copy", total, total)
    return files


def _writer(raw: io.BufferedWriter, out: Path) -> tarfile.TarFile:
    if out.name.endswith((".gz", ".tgz")):
        return tarfile.open(fileobj=raw, mode="w:gz")
    return tarfile.open(fileobj=raw, mode="w")


def _archive(
    tar: tarfile.TarFile, staging: Path, files: list[BackupFile], progress: ProgressFn
) -> None:
    total = sum(f.size for f in files)
    done, reported = 0, 0
    progress("archive", 0, total)

    def counted(n: int) -> None:
        nonlocal done, reported
        done += n
        if done - reported >= _CHUNK:
            reported = done
            progress("archive", done, total)

    for f in files:
        path = staging / f.path
        info = tar.gettarinfo(path, arcname=f"data/{f.path}")
        with path.open("rb") as fh:
            tar.addfile(info, _Counted(fh, counted))  # type: ignore[arg-type]
    progress("archive", total, total)


def create_backup(
    data_dir: Path,
    out: Path,
    *,
    with_bundles: bool = False,
    progress: ProgressFn | None = None,
) -> BackupManifest:
    """Write the backup archive of `data_dir` to `out` (0600: it holds secrets)."""
    report = progress or _no_progress
    data_dir = Path(data_dir)
    if not db_path(data_dir).is_file():
        raise DataError(str(data_dir), "no edge store here (aivos.db): not an agent's data dir")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".aivos-backup-", dir=out.parent) as tmp:
        staging = Path(tmp) / "data"
        staging.mkdir()
        files = _stage(data_dir, staging, with_bundles, report)
        manifest = BackupManifest(
            format=FORMAT,
            created_at=time.time(),
            aivos_version=__version__,
            source=str(data_dir.resolve()),
            files=files,
            with_bundles=with_bundles,
        )
        partial = Path(tmp) / "archive"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with _writer(raw, out) as tar:
                body = msgspec.json.format(msgspec.json.encode(manifest))
                info = tarfile.TarInfo(MANIFEST_NAME)
                info.size, info.mtime, info.mode = len(body), int(manifest.created_at), 0o600
                tar.addfile(info, io.BytesIO(body))
                _archive(tar, staging, files, report)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
    return manifest


def read_manifest(archive: Path) -> BackupManifest:
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            member = tar.extractfile(MANIFEST_NAME)
            if member is None:
                raise KeyError(MANIFEST_NAME)
            return msgspec.json.decode(member.read(), type=BackupManifest)
    except (tarfile.TarError, KeyError, OSError, msgspec.DecodeError) as exc:
        raise BackupCorrupt(str(archive), f"not an aivos backup: {exc}") from exc


def _extract(archive: Path, manifest: BackupManifest, staging: Path, progress: ProgressFn) -> None:
    """Every manifest file, and nothing else, into `staging`, each sha256 checked."""
    expected = {f"data/{f.path}": f for f in manifest.files}
    seen: set[str] = set()
    total, done = sum(f.size for f in manifest.files), 0
    progress("extract", 0, total)
    with tarfile.open(archive, mode="r:*") as tar:
        for member in tar:
            if member.name == MANIFEST_NAME:
                continue
            entry = expected.get(member.name)
            if entry is None or not member.isfile():
                raise BackupCorrupt(str(archive), f"unexpected entry {member.name!r}")
            rel = PurePosixPath(entry.path)
            if rel.is_absolute() or ".." in rel.parts:
                raise BackupCorrupt(str(archive), f"unsafe path {entry.path!r}")
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file
            with source, target.open("wb") as fh:
                while block := source.read(_CHUNK):
                    fh.write(block)
                    done += len(block)
                    progress("extract", min(done, max(total - 1, 0)), total)
            if _sha256(target) != entry.sha256:
                raise BackupCorrupt(str(archive), f"{entry.path}: sha256 does not match")
            target.chmod(0o600)
            seen.add(member.name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupCorrupt(str(archive), f"missing from the archive: {', '.join(missing[:5])}")
    progress("extract", total, total)


def restore_backup(
    archive: Path, data_dir: Path, *, force: bool = False, progress: ProgressFn | None = None
) -> BackupManifest:
    """Restore `archive` into `data_dir` (stop the agent first)."""
    archive, data_dir = Path(archive), Path(data_dir)
    manifest = read_manifest(archive)
    if manifest.format != FORMAT:
        raise BackupCorrupt(str(archive), f"backup format {manifest.format} is not supported")
    if data_dir.exists() and any(data_dir.iterdir()) and not force:
        raise RestoreRefused(
            f"{data_dir} is not empty; stop its agent and pass --force to replace its contents"
        )
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-", dir=data_dir.parent))
    try:
        _extract(archive, manifest, staging, progress or _no_progress)
        staging.chmod(0o700)
        if data_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.old-", dir=data_dir.parent))
            os.replace(data_dir, old / "data")
            os.replace(staging, data_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
