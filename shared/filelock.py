"""An exclusive lock between processes (and threads): `fcntl.flock` on a file or folder.

The kernel drops a `flock` when its holder's file is closed, so a killed holder never
leaves a stale lock behind. Each `exclusive` block opens its own file description, so two
threads of one process exclude each other too; a block nested in another on the same
path in the same thread deadlocks (take it once, at the outermost call). Linux/POSIX only,
like the rest of the appliance."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive"]

_log = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block, waiting while another holds it
    (`what` names the holder's kind in the one warning logged before waiting).

    A folder is locked as itself (nothing is added to it); any other path is a lock file,
    created if missing and never removed: removing it would let a waiter lock the
    unlinked file while a newcomer locks a fresh one."""
    if path.is_dir():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log.warning("waiting for %s: another %s holds its lock", path, what)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
