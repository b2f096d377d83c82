"""`aivos backup` while a writer appends, `aivos restore`, and what restore refuses."""

from __future__ import annotations

import asyncio
import io
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from aivos.edge.backup import BackupCorrupt, RestoreRefused, read_manifest, restore_backup
from aivos.edge.knowledge import KnowledgeIndex
from aivos.edge.store import Store
from aivos.edge.store.audit import AuditRecord
from tests.fixtures.model import run_aivos
from tests.fixtures.wait import eventually_sync
from tests.unit.test_knowledge_index import CARDS, HashEmbedder

ROOT = Path(__file__).resolve().parents[2]


class _Appender:
    """Appends audit records (each one a durable group commit) until stopped."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.appended = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.store.append_audit(AuditRecord(id=f"req-{self.appended}", intent="x"))
            self.appended += 1

    def __enter__(self) -> _Appender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _audit_rows(db: Path) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute("SELECT seq, id, hash FROM audit ORDER BY seq"))
    finally:
        conn.close()


def test_backup_while_appending_then_restore_keeps_every_row(tmp_path: Path) -> None:
    data = tmp_path / "edge"
    store = Store.open(data)
    with KnowledgeIndex.open(data / "knowledge", HashEmbedder()) as kb:
        kb.add_document("cards.md", CARDS)
    (data / "config.toml").write_text('site_id = "site-1"\n')
    try:
        with _Appender(store) as appender:
            eventually_sync(lambda: appender.appended >= 50, timeout=60, what="50 audit rows")
            before = appender.appended
            made = run_aivos("backup", "--data-dir", str(data), "--out", str(tmp_path / "b.tar"))
            assert made.returncode == 0, made.stderr
            after = appender.appended
            # not on a terminal: plain progress lines on stderr, one per stage start and end
            said = made.stderr.splitlines()
            for stage in ("copying (SQLite snapshots, index, files)", "writing the archive"):
                assert f"{stage}: started" in said, made.stderr
                assert any(line.startswith(f"{stage}: done in ") for line in said), made.stderr
            # the writer went on during the backup: rows committed after it started exist
            eventually_sync(lambda: appender.appended > after + 10, timeout=60, what="more rows")
    finally:
        store.close()

    manifest = read_manifest(tmp_path / "b.tar")
    kinds = {f.path: f.kind for f in manifest.files}
    assert kinds["aivos.db"] == "sqlite" and kinds["knowledge/meta.sqlite"] == "sqlite"
    assert {"knowledge/index.usearch", "knowledge/manifest.json", "config.toml"} <= set(kinds)
    assert not any(p.endswith(("-wal", "-shm", "lock")) for p in kinds)

    target = tmp_path / "restored"
    restored = run_aivos("restore", "--data-dir", str(target), str(tmp_path / "b.tar"))
    assert restored.returncode == 0, restored.stderr
    assert "extracting and checking sha256s: started" in restored.stderr.splitlines()
    verify = run_aivos("audit", "verify", "--data-dir", str(target))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit chain intact" in verify.stdout

    source_rows, restored_rows = _audit_rows(data / "aivos.db"), _audit_rows(target / "aivos.db")
    # a consistent snapshot: every row committed before the backup began, and exactly the
    # source's first rows (same seq, id and hash: nothing torn, nothing reordered)
    assert before <= len(restored_rows) <= len(source_rows)
    assert restored_rows == source_rows[: len(restored_rows)]
    with KnowledgeIndex.open(target / "knowledge", HashEmbedder()) as kb:
        assert not kb.rebuilt
        assert [d.source for d in kb.list_documents()] == ["cards.md"]
        assert kb.search("lost card", k=1)[0].source == "cards.md"


def _small_backup(tmp_path: Path) -> Path:
    data = tmp_path / "edge"
    with Store.open(data) as store:
        store.create_token_sync("client", "t1")
    made = run_aivos("backup", "--data-dir", str(data), "--out", str(tmp_path / "b.tar.gz"))
    assert made.returncode == 0, made.stderr
    return tmp_path / "b.tar.gz"


def test_restore_refuses_a_non_empty_dir_without_force(tmp_path: Path) -> None:
    archive = _small_backup(tmp_path)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    refused = run_aivos("restore", "--data-dir", str(target), str(archive))
    assert refused.returncode == 1
    said = " ".join(refused.stderr.split())  # rich wraps long lines
    assert "is not empty" in said and "pass --force" in said
    assert (target / "keep.txt").read_text() == "mine"

    forced = run_aivos("restore", "--data-dir", str(target), "--force", str(archive))
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in target.iterdir()) == ["aivos.db"]


def test_restore_checks_every_sha256_and_leaves_the_target_alone(tmp_path: Path) -> None:
    archive = _small_backup(tmp_path)
    # rewrite the archive with one byte of aivos.db changed (the manifest unchanged)
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w") as dst:
        for member in src:
            body = src.extractfile(member)
            assert body is not None
            data = bytearray(body.read())
            if member.name == "data/aivos.db":
                data[200] ^= 0xFF
            dst.addfile(member, io.BytesIO(bytes(data)))
    target = tmp_path / "target"
    with pytest.raises(BackupCorrupt, match="aivos.db: sha256 does not match"):
        restore_backup(tampered, target)
    assert not target.exists()
    assert not list(tmp_path.glob(".target.restore-*"))  # the staging dir is gone too

    with pytest.raises(BackupCorrupt, match="not an aivos backup"):
        restore_backup(tmp_path / "edge" / "aivos.db", target)
    with pytest.raises(RestoreRefused):
        restore_backup(archive, tmp_path / "edge")
    assert read_manifest(archive).format == 1


def test_the_install_docs_backup_block_runs(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "install.md").read_text()
    block = re.search(r"<!-- install-backup -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "docs/install.md has no backup block"
    data = tmp_path / "edge"
    with Store.open(data) as store:
        asyncio.run(store.append_audit(AuditRecord(id="req-1", intent="balance")))
    env = {
        **os.environ,
        "DATA": str(data),
        "BACKUP": str(tmp_path / "edge.tar.gz"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + block.group(1)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "audit chain intact: 1 rows" in done.stdout
    assert _audit_rows(tmp_path / "edge.restored" / "aivos.db") == _audit_rows(data / "aivos.db")
