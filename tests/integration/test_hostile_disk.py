"""Issue 12, reproduction 7: a full disk is `507 disk_full`, nothing is half-written,
readiness notices it, and writes resume by themselves when space returns: for the edge
store, the knowledge index (meta.sqlite + index file) and accepted jobs.

Runs on a real 3 MB tmpfs (the test needs root to mount it; it is skipped, saying why,
where mounting is not permitted)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from litestar import Litestar, put
from litestar.testing import TestClient

from aivos.edge.api.errors import exception_handlers
from aivos.edge.jobs import AsyncJobs
from aivos.edge.knowledge import KnowledgeIndex
from aivos.edge.store import AuditRecord, Store
from aivos.shared.errors import DiskFull
from tests.fixtures.wait import eventually

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


class _WordEmbedder:
    """A deterministic embedder for the knowledge index (no model needed)."""

    embedding_version = "words-v1"
    embedding_dim = 32

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.embedding_dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, sum(word.encode()) % self.embedding_dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def _document(i: int) -> str:
    return f"# Note {i}\n\n" + " ".join(f"word{i}x{j}" for j in range(3000))


def test_a_full_disk_refuses_a_knowledge_document_with_nothing_half_written(
    small_fs: Path,
) -> None:
    """`POST /v1/knowledge` on a full disk: `DiskFull` (507), not `sqlite3.OperationalError`
    (500); meta.sqlite, the index file, its manifest and the searchable view stay at the
    same generation; the next document is taken once space returns."""
    directory = small_fs / "kb"
    with KnowledgeIndex.open(directory, _WordEmbedder()) as kb:
        kb.add_document("first.md", _document(0))
        ballast = fill(small_fs)
        refused = None
        for i in range(1, 200):
            try:
                kb.add_document(f"doc-{i}.md", _document(i))
            except DiskFull as exc:
                refused = exc
                break
        assert refused is not None, "the disk never filled"
        assert refused.code == "disk_full"

        sources = {d.source for d in kb.list_documents()}
        assert f"doc-{i}.md" not in sources  # the refused document left nothing behind
        manifest = json.loads((directory / "manifest.json").read_text())
        generation = kb._meta.generation()
        assert manifest["generation"] == generation and manifest["n_chunks"] == len(kb)
        assert not list(directory.glob(".index.*"))
        assert {p.source for p in kb.search("word0x1 word0x2", k=3)} == {"first.md"}

        ballast.unlink()
        kb.add_document(f"doc-{i}.md", _document(i))
        assert f"doc-{i}.md" in {d.source for d in kb.list_documents()}
        assert {p.source for p in kb.search(f"word{i}x1 word{i}x2", k=1)} == {f"doc-{i}.md"}
    with KnowledgeIndex.open(directory, _WordEmbedder()) as reopened:
        assert reopened.rebuilt is False  # the files agreed with meta.sqlite
        assert len(reopened.list_documents()) == len(sources) + 1


class _Submission(msgspec.Struct, frozen=True):
    text: str
    session_id: str | None = None
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None


class _Answer(msgspec.Struct, frozen=True):
    request_id: str
    answer: str


class _Pipeline:
    """Waits until the test releases the job's text, records an audit row per answer (a real
    write), then runs `after` (the test fills the disk there)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0
        self.release: dict[str, asyncio.Event] = {}
        self.after: Callable[[], Awaitable[None]] | None = None

    async def infer_job(self, query: Any, job_id: str) -> tuple[_Answer, None]:
        await self.release.setdefault(query.text, asyncio.Event()).wait()
        self.calls += 1
        await self.store.append_audit(
            AuditRecord(id=f"job-{job_id}-{self.calls}", decision="local", detail={})
        )
        if self.after is not None:
            after, self.after = self.after, None
            await after()
        return _Answer(request_id=job_id, answer="ok"), None

    def go(self, text: str) -> None:
        self.release.setdefault(text, asyncio.Event()).set()


class _NoEscalations:
    def wake(self) -> None:
        pass


async def _exhaust(store: Store) -> None:
    """After `fill`: write until the store itself refuses (WAL space already allocated)."""
    for i in range(5000):
        try:
            await store.append_audit(record(100_000 + i))
        except DiskFull:
            return
    raise AssertionError("the store never filled")


async def test_a_job_accepted_before_the_disk_fills_runs_once_space_returns(
    small_fs: Path,
) -> None:
    """A job whose outcome could not be stored (disk full) stays queued, is retried without
    a restart once space returns, and is answered once (one audit row); a job whose run
    could not even record its answer runs again."""
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    with Store.open(small_fs / "edge", min_free_bytes=MIN_FREE) as store:
        pipeline = _Pipeline(store)
        jobs = AsyncJobs(
            store,
            pipeline,  # type: ignore[arg-type]
            _NoEscalations(),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]  # no callback URLs here
            spawn=spawn,
            max_text_chars=1000,
            callback_allow_hosts=[],
            retry_interval_s=0.1,
        )
        ballast: list[Path] = []

        async def fill_the_disk() -> None:
            ballast.append(fill(small_fs))
            await _exhaust(store)

        # both accepted (202) while writes still fit; their runs wait for the test
        answered = await jobs.submit(_Submission(text="answered"))
        unanswered = await jobs.submit(_Submission(text="unanswered"))
        # 1. answered (its audit row committed), then the disk fills: the outcome cannot be stored
        pipeline.after = fill_the_disk
        pipeline.go("answered")
        await eventually(lambda: jobs.stalled == 1, timeout=30, what="the first job to stall")
        # 2. run while the disk is full: its answer cannot be recorded at all
        pipeline.go("unanswered")
        await eventually(lambda: jobs.stalled == 2, timeout=30, what="the second job to stall")
        assert pipeline.calls == 2
        for job in (answered, unanswered):
            assert store.get_job(job.job_id).state == "queued"

        # space returns: both finish without a restart
        ballast[0].unlink()
        for job in (answered, unanswered):
            done = await eventually(
                lambda job=job: store.get_job(job.job_id).state == "done", timeout=30
            )
            assert done
            assert store.get_job(job.job_id).result == {"request_id": job.job_id, "answer": "ok"}
        assert jobs.stalled == 0
        # the answered job was not answered again (its kept outcome was stored); the other
        # one ran again: one audit row each
        assert pipeline.calls == 3
        audit_ids = [
            r["id"] for r in store.readers.get().execute("SELECT id FROM audit ORDER BY seq")
        ]
        assert [i for i in audit_ids if i.startswith("job-")] == [
            f"job-{answered.job_id}-1",
            f"job-{unanswered.job_id}-3",
        ]
