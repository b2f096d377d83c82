"""The CLI contract, run as a user would: `aivos tokens create|revoke`, `aivos audit verify`."""

import asyncio
import sqlite3
import subprocess
import sys

from aivos.edge.store import AuditRecord, Store
from aivos.edge.store.db import db_path

_AIVOS = [sys.executable, "-c", "import sys; from aivos.cli import main; main(sys.argv[1:])"]


def aivos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_AIVOS, *args], capture_output=True, text=True, timeout=60)


def test_tokens_create_prints_the_token_alone_on_the_last_line(tmp_path):
    out = aivos(
        "tokens", "create", "--data-dir", str(tmp_path), "--scope", "operator", "--name", "ops"
    )
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    assert token.startswith("aivos_") and " " not in token

    store = Store.open(tmp_path, token_recheck_s=0.0)
    try:
        info = store.authenticate(token)
        assert info is not None and info.name == "ops" and info.scope == "operator"
        revoked = aivos("tokens", "revoke", "--data-dir", str(tmp_path), "ops")
        assert revoked.returncode == 0, revoked.stderr
        assert store.authenticate(token) is None
    finally:
        store.close()

    again = aivos("tokens", "revoke", "--data-dir", str(tmp_path), "ops")
    assert again.returncode == 1 and "ops" in again.stderr


def test_tokens_create_rejects_an_unknown_scope(tmp_path):
    out = aivos("tokens", "create", "--data-dir", str(tmp_path), "--scope", "root")
    assert out.returncode != 0


def test_audit_verify_exit_codes_name_the_bad_row(tmp_path):
    store = Store.open(tmp_path)

    async def fill() -> None:
        for i in range(5):
            await store.append_audit(AuditRecord(id=f"req-{i}", decision="local"))

    asyncio.run(fill())
    store.close()

    ok = aivos("audit", "verify", "--data-dir", str(tmp_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "5 rows" in ok.stdout

    conn = sqlite3.connect(db_path(tmp_path))
    conn.execute("UPDATE audit SET intent = 'tampered' WHERE seq = 3")
    conn.commit()
    conn.close()
    bad = aivos("audit", "verify", "--data-dir", str(tmp_path))
    assert bad.returncode == 1
    said = " ".join((bad.stdout + bad.stderr).split())
    assert "seq 3" in said and "req-2" in said and "edited" in said


def test_audit_verify_without_a_store_fails(tmp_path):
    out = aivos("audit", "verify", "--data-dir", str(tmp_path / "missing"))
    assert out.returncode == 1
