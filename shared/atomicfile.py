"""Replace a file whole: readers (nats-server, the agent, a restart after power loss) see
the old content or the new, never half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(
    path: Path, data: bytes, *, mode: int | None = None, sync_dir: bool = False
) -> None:
    """Write `data` to a temp file beside `path`, fsync it, rename it over `path`.

    `mode`: the file's permission bits (default: mkstemp's 0600). `sync_dir`: fsync the
    folder too, so the rename itself survives a power loss."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_dir:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
