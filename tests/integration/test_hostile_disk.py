"""Issue 12, reproduction 7: a full disk is `507 disk_full`, nothing is half-written,
readiness notices it, and writes resume by themselves when space returns.

Runs on a real 3 MB tmpfs (the test needs root to mount it; it is skipped, saying why,
where mounting is not permitted)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, put
from litestar.testing import TestClient

from aivos.edge.api.errors import exception_handlers
from aivos.edge.store import AuditRecord, Store
from aivos.shared.errors import DiskFull

MIN_FREE = 256 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 3 MB tmpfs needs root (CI runs as root)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Write a ballast file until the file system is full."""
    ballast = directory / "ballast"
    chunk = b"\0" * 4096
    with open(ballast, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(chunk)
    return ballast


def record(i: int) -> AuditRecord:
    return AuditRecord(
        id=f"req-{i}-{uuid.uuid4().hex}", decision="local", detail={"pad": "x" * 900}
    )


async def test_a_full_disk_refuses_writes_cleanly_and_recovers(small_fs: Path) -> None:
    with Store.open(small_fs / "edge", min_free_bytes=MIN_FREE) as store:
        for i in range(5):
            await store.append_audit(record(i))
        assert await store.check_writable() is True
        ballast = fill(small_fs)

        # writes fail with DiskFull (a few may still land in WAL space already allocated)
        acknowledged, refused = 5, None
        for i in range(5, 3000):
            try:
                await store.append_audit(record(i))
            except DiskFull as exc:
                refused = exc
                break
            acknowledged += 1
        assert refused is not None, "the disk never filled"
        assert refused.code == "disk_full"
        assert await store.check_writable() is False  # readiness: not ready
        # nothing half-written: every acknowledged row is there, each with its outbox record
        assert store.audit_count() == acknowledged
        assert store.outbox_depth() == acknowledged
        assert store.verify_audit().ok

        # space returns: the same store (no restart) writes again
        ballast.unlink()
        await store.append_audit(record(9999))
        assert await store.check_writable() is True
        assert store.audit_count() == acknowledged + 1
    verify = subprocess.run(
        [sys.executable, "-m", "aivos", "audit", "verify", "--data-dir", str(small_fs / "edge")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{acknowledged + 1} rows" in verify.stdout


def test_the_api_answers_507_disk_full_not_500(small_fs: Path) -> None:
    store = Store.open(small_fs / "edge")

    @put("/facts/{key:str}")
    async def put_fact(key: str) -> dict[str, Any]:
        fact = await store.put_fact("s1", key, "v" * 2000)
        return {"key": fact.key}

    app = Litestar(route_handlers=[put_fact], exception_handlers=exception_handlers)
    try:
        with TestClient(app) as client:
            assert client.put("/facts/first").status_code == 200
            fill(small_fs)
            statuses = []
            for i in range(2000):
                resp = client.put(f"/facts/k{i}")
                statuses.append(resp.status_code)
                if resp.status_code != 200:
                    break
            assert statuses[-1] == 507, statuses[-3:]
            assert resp.json()["error"]["code"] == "disk_full"
            assert 500 not in statuses
    finally:
        store.close()
