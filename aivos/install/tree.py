"""Idempotent file-system writes under a root prefix, each reported as one `Change`.

A file is rewritten only when its bytes differ, and its mode and owner are set only when
they differ, so a second install with the same inputs touches nothing (same bytes, same
mtimes) and reports every path as ``unchanged``. A folder the installer owns can be pruned
to the files it was just given (`prune`); each file removed is reported ``removed``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Change", "Owner", "Tree"]


@dataclass(frozen=True)
class Owner:
    """A uid/gid pair to give files, or no change of ownership (`None`)."""

    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class Change:
    action: str  # "created" | "updated" | "unchanged" | "removed"
    path: str  # the path as it will be on the box (without the prefix)


@dataclass
class Tree:
    """Writes below `prefix`; `report` is called with each `Change` as it happens."""

    prefix: Path
    report: Callable[[Change], None] = lambda change: None
    changes: list[Change] = field(default_factory=list)

    def path(self, runtime: str | Path) -> Path:
        """Where the absolute runtime path `runtime` lies under the prefix."""
        return self.prefix / Path(runtime).relative_to("/")

    def directory(self, runtime: str | Path, mode: int, owner: Owner = Owner()) -> None:
        target = self.path(runtime)
        if target.is_dir():
            action = "updated" if self._fix(target, mode, owner) else "unchanged"
        else:
            target.mkdir(parents=True)
            self._fix(target, mode, owner)
            action = "created"
        self.record(action, runtime)

    def file(self, runtime: str | Path, data: bytes, mode: int, owner: Owner = Owner()) -> None:
        target = self.path(runtime)
        if target.is_file() and target.read_bytes() == data:
            action = "updated" if self._fix(target, mode, owner) else "unchanged"
        else:
            action = "updated" if target.exists() else "created"
            target.parent.mkdir(parents=True, exist_ok=True)
            # write next to the target and rename: a reader never sees half a file, and
            # the mode is right before the content (a key is never briefly world-readable)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            try:
                os.fchmod(fd, mode)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                self._fix(Path(tmp), mode, owner)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self.record(action, runtime)

    def owned(
        self,
        runtime: str | Path,
        mode_dirs: int,
        owner: Owner,
        *,
        skip: Callable[[str], bool] = lambda name: False,
    ) -> None:
        """Give everything below the existing directory `runtime` to `owner` (files keep
        their modes; directories get `mode_dirs`), reporting one change for the tree.
        Directories whose name `skip` accepts are left alone with all they hold (a running
        service's own state)."""
        root = self.path(runtime)
        changed = False
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [name for name in dirnames if not skip(name)]
            changed |= self._fix(Path(dirpath), mode_dirs, owner)
            for name in filenames:
                path = Path(dirpath) / name
                changed |= self._fix(path, path.stat().st_mode & 0o7777, owner)
            dirnames.sort()
        self.record("updated" if changed else "unchanged", f"{runtime}/**")

    def prune(
        self, runtime: str | Path, keep: Collection[str], managed: Callable[[str], bool]
    ) -> None:
        """Remove the files directly in the directory `runtime` whose name `managed` accepts
        and that are not in `keep`, reporting each as ``removed``; anything else there
        (other kinds of file, directories and what they hold) is left alone."""
        directory = self.path(runtime)
        for entry in sorted(directory.iterdir()):
            # a link is removed, never what it points to; a directory is never ours to remove
            is_file = entry.is_symlink() or entry.is_file()
            if is_file and managed(entry.name) and entry.name not in keep:
                # an unlink, not an overwrite: on a journaling or copy-on-write file system
                # or an SSD, writing over a file does not reach the blocks that held it
                entry.unlink()
                self.record("removed", f"{runtime}/{entry.name}")

    def _fix(self, path: Path, mode: int, owner: Owner) -> bool:
        st = path.lstat()
        changed = False
        if st.st_mode & 0o7777 != mode:
            path.chmod(mode)
            changed = True
        uid = st.st_uid if owner.uid is None else owner.uid
        gid = st.st_gid if owner.gid is None else owner.gid
        if (uid, gid) != (st.st_uid, st.st_gid):
            os.chown(path, uid, gid)
            changed = True
        return changed

    def record(self, action: str, runtime: str | Path) -> None:
        change = Change(action, str(runtime))
        self.changes.append(change)
        self.report(change)

    def counts(self) -> dict[str, int]:
        out = {"created": 0, "updated": 0, "unchanged": 0, "removed": 0}
        for change in self.changes:
            out[change.action] += 1
        return out
