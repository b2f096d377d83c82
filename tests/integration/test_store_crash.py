"""SIGKILL a process in the middle of group-committed audit appends; every acknowledged row
must be there afterwards, the chain must verify and SQLite's integrity check must pass."""

import os
import signal
import subprocess
import sys

from aivos.edge.store import Store

_CHILD = r"""
import asyncio, sys
from aivos.edge.store import AuditRecord, Store

async def main(data_dir, prefix):
    store = Store.open(data_dir)
    counter = 0

    async def worker(w):
        nonlocal counter
        while True:
            counter += 1
            rid = f"{prefix}-{w}-{counter}"
            await store.append_audit(AuditRecord(id=rid, decision="local", intent="x"))
            sys.stdout.write(rid + "\n")
            sys.stdout.flush()

    await asyncio.gather(*(worker(w) for w in range(32)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_acknowledged_appends_survive_sigkill(tmp_path):
    acked: list[str] = []
    for round_no in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path), f"r{round_no}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        target = 50 + 97 * round_no  # kill at a different point each round
        for _ in range(target):
            line = child.stdout.readline()
            assert line, "child exited early"
            acked.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # lines written before the kill are acknowledged too
        acked.extend(line.strip() for line in child.stdout.read().splitlines() if line.strip())

        store = Store.open(tmp_path)
        try:
            missing = [rid for rid in acked if store.get_audit(rid) is None]
            assert missing == []
            result = store.verify_audit()
            assert result.ok, result.reason
            assert store.integrity_check() == "ok"
            assert store.outbox_depth() == store.audit_count()
        finally:
            store.close()
