"""Who owns a workflow run: the `owner` column of `workflow_runs` (migration ``0010_owners``).

A run started for a client request (an intent routed from `POST /v1/infer`) belongs to the
token that sent it; runs started by the site (webhooks, NATS triggers, the CLI) have no owner
and only operators see them. The run journal (journal.py) owns every other column and
filters listings by owner.
"""

from __future__ import annotations

import sqlite3

from aivos.shared.errors import NotFound

__all__ = ["run_owner", "set_run_owner"]


def run_owner(conn: sqlite3.Connection, run_id: str) -> str | None:
    """The run's owner token id (None: the site's own); NotFound when there is no such run."""
    row = conn.execute("SELECT owner FROM workflow_runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"no workflow run {run_id}")
    owner: str | None = row["owner"]
    return owner


def set_run_owner(conn: sqlite3.Connection, run_id: str, owner: str) -> None:
    """Record the token a run was started for (once: an owner is never replaced)."""
    conn.execute(
        "UPDATE workflow_runs SET owner = ? WHERE id = ? AND owner IS NULL", (owner, run_id)
    )
