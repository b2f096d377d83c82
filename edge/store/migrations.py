"""Named, recorded schema migrations (in the manner of sqlite-utils `migrations.py`).

`MIGRATIONS` is an ordered list of `(name, function)`. `apply()` runs, in order, those whose
name is not yet in `_migrations`, each in its own transaction together with the row that
records it, so applying is idempotent and a crash mid-way leaves no half-applied migration.
Never edit or reorder a migration that has shipped: append a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

import sqlite_utils

__all__ = ["MIGRATIONS", "Migration", "apply", "applied"]

Migration = tuple[str, Callable[[sqlite_utils.Database], None]]


def _m0001_audit(db: sqlite_utils.Database) -> None:
    db.table("audit").create(
        {
            "seq": int,
            "id": str,
            "ts": str,
            "kind": str,
            "intent": str,
            "confidence": float,
            "decision": str,
            "model_version": str,
            "latency_ms": float,
            "pii_counts": str,
            "trace_id": str,
            "detail": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="seq",
        not_null={"id", "ts", "kind", "pii_counts", "detail", "prev_hash", "hash"},
    )
    db.table("audit").create_index(["id"], unique=True)
    # The chain head: lets verify() notice rows deleted from the end of the chain.
    db.table("audit_head").create({"one": int, "seq": int, "hash": str}, pk="one")


def _m0002_outbox(db: sqlite_utils.Database) -> None:
    db.table("outbox").create(
        {
            "seq": int,
            "id": str,
            "data_class": str,
            "subject": str,
            "payload": bytes,
            "created_at": str,
            "attempts": int,
            "sent_at": str,
        },
        pk="seq",
        not_null={"id", "data_class", "subject", "payload", "created_at", "attempts"},
        defaults={"attempts": 0, "subject": ""},
    )
    db.table("outbox").create_index(["id"], unique=True)
    db.execute("CREATE INDEX idx_outbox_pending ON outbox(seq) WHERE sent_at IS NULL")
    # Pending count kept by triggers, so the quota check is O(1) whatever the backlog.
    db.table("outbox_meta").create({"one": int, "pending": int}, pk="one")
    db.execute("INSERT INTO outbox_meta(one, pending) VALUES (1, 0)")
    db.executescript(
        """
        CREATE TRIGGER outbox_pending_ins AFTER INSERT ON outbox WHEN NEW.sent_at IS NULL
        BEGIN UPDATE outbox_meta SET pending = pending + 1 WHERE one = 1; END;
        CREATE TRIGGER outbox_pending_sent AFTER UPDATE OF sent_at ON outbox
        WHEN OLD.sent_at IS NULL AND NEW.sent_at IS NOT NULL
        BEGIN UPDATE outbox_meta SET pending = pending - 1 WHERE one = 1; END;
        CREATE TRIGGER outbox_pending_del AFTER DELETE ON outbox WHEN OLD.sent_at IS NULL
        BEGIN UPDATE outbox_meta SET pending = pending - 1 WHERE one = 1; END;
        """
    )


def _m0003_jobs(db: sqlite_utils.Database) -> None:
    db.table("jobs").create(
        {
            "id": str,
            "kind": str,
            "state": str,
            "request": str,
            "result": str,
            "error": str,
            "callback_url": str,
            "attempts": int,
            "created_at": str,
            "updated_at": str,
            "deadline": str,
        },
        pk="id",
        not_null={"kind", "state", "request", "attempts", "created_at", "updated_at"},
        defaults={"attempts": 0},
    )
    db.table("jobs").create_index(["state", "created_at"])


def _m0004_memory(db: sqlite_utils.Database) -> None:
    db.table("memory_turns").create(
        {"seq": int, "session_id": str, "role": str, "text": str, "ts": str},
        pk="seq",
        not_null={"session_id", "role", "text", "ts"},
    )
    db.table("memory_turns").create_index(["session_id", "seq"])
    db.table("memory_turns").create_index(["ts"])
    db.table("memory_facts").create(
        {"session_id": str, "key": str, "value": str, "updated_at": str},
        pk=("session_id", "key"),
        not_null={"value", "updated_at"},
    )
    db.table("memory_facts").create_index(["updated_at"])


def _m0005_tokens(db: sqlite_utils.Database) -> None:
    db.table("tokens").create(
        {"name": str, "scope": str, "hash": str, "created_at": str, "revoked_at": str},
        pk="name",
        not_null={"scope", "hash", "created_at"},
    )
    db.table("tokens").create_index(["hash"], unique=True)


def _m0006_workflows(db: sqlite_utils.Database) -> None:
    """Durable workflow runs (edge/workflows): one row per run, one row per executed step."""
    db.execute(
        """CREATE TABLE workflow_runs (
            id TEXT PRIMARY KEY, workflow TEXT NOT NULL, digest TEXT NOT NULL,
            trigger TEXT NOT NULL, state TEXT NOT NULL, inputs TEXT NOT NULL,
            cursor TEXT, seq INTEGER NOT NULL DEFAULT 0, response TEXT, error TEXT,
            trace_id TEXT NOT NULL, dedup_key TEXT UNIQUE, active_s REAL NOT NULL DEFAULT 0,
            deadline_missed INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL, finished_at TEXT)"""
    )
    db.execute("CREATE INDEX idx_workflow_runs_state ON workflow_runs(state, created_at)")
    db.execute("CREATE INDEX idx_workflow_runs_created ON workflow_runs(created_at)")
    db.execute(
        """CREATE TABLE workflow_steps (
            run_id TEXT NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL, step_id TEXT NOT NULL, kind TEXT NOT NULL,
            state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, input TEXT,
            output TEXT, error TEXT, idem_key TEXT, attempt_log TEXT NOT NULL DEFAULT '[]',
            started_at TEXT NOT NULL, finished_at TEXT, duration_ms REAL,
            wait_until REAL, decision TEXT, decided_by TEXT, note TEXT,
            PRIMARY KEY (run_id, seq))"""
    )


def _m0007_webhook_deliveries(db: sqlite_utils.Database) -> None:
    """Replay cache of signed webhooks: a delivery id is accepted once until it expires
    (its timestamp plus the tolerance window); survives restarts."""
    db.execute(
        """CREATE TABLE webhook_deliveries (
            source TEXT NOT NULL, delivery_id TEXT NOT NULL, expires_at REAL NOT NULL,
            PRIMARY KEY (source, delivery_id))"""
    )
    db.execute("CREATE INDEX idx_webhook_deliveries_expiry ON webhook_deliveries(expires_at)")


def _m0008_store_probe(db: sqlite_utils.Database) -> None:
    """One row rewritten by the readiness probe (a real write, not a no-op UPDATE)."""
    db.execute("CREATE TABLE store_probe (one INTEGER PRIMARY KEY, at TEXT, nonce BLOB)")


def _m0009_retention_indexes(db: sqlite_utils.Database) -> None:
    """Indexes the retention task deletes by."""
    db.execute("CREATE INDEX idx_outbox_sent ON outbox(sent_at) WHERE sent_at IS NOT NULL")
    db.execute("CREATE INDEX idx_jobs_updated ON jobs(updated_at)")
    db.execute("CREATE INDEX idx_workflow_runs_finished ON workflow_runs(finished_at)")


def _m0010_owners(db: sqlite_utils.Database) -> None:
    """Who owns what a client token made: tokens get a stable `id` (a revoked name reused
    later is another owner) and `bound` attributes (JSON object, e.g. the account the token
    acts for); jobs and workflow runs get the owner's token id; `session_owners` records the
    token that first wrote a session. NULL owner: the site's own (operators only); existing
    sessions, jobs and runs start so."""
    db.execute("ALTER TABLE tokens ADD COLUMN id TEXT")
    db.execute("ALTER TABLE tokens ADD COLUMN bound TEXT NOT NULL DEFAULT '{}'")
    db.execute("UPDATE tokens SET id = lower(hex(randomblob(10)))")
    db.execute("CREATE UNIQUE INDEX idx_tokens_id ON tokens(id)")
    db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
    db.execute("ALTER TABLE workflow_runs ADD COLUMN owner TEXT")
    db.execute("CREATE INDEX idx_workflow_runs_owner ON workflow_runs(owner, id)")
    db.execute(
        """CREATE TABLE session_owners (
            session_id TEXT PRIMARY KEY, owner TEXT, created_at TEXT NOT NULL)"""
    )
    db.execute(
        "INSERT OR IGNORE INTO session_owners(session_id, owner, created_at) "
        "SELECT session_id, NULL, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM ("
        " SELECT session_id FROM memory_turns UNION SELECT session_id FROM memory_facts)"
    )


def _m0011_passage_feedback(db: sqlite_utils.Database) -> None:
    """`POST /v1/feedback`: one vote per answered request (edge/store/feedback.py)."""
    db.table("passage_feedback").create(
        {
            "request_id": str,
            "ts": str,
            "intent": str,
            "helpful": int,
            "doc_id": str,
            "chunk_id": int,
        },
        pk="request_id",
        not_null={"request_id", "ts", "intent", "helpful"},
    )
    db.execute("CREATE INDEX idx_passage_feedback_intent ON passage_feedback(intent)")


def _m0012_site_candidates(db: sqlite_utils.Database) -> None:
    """Hard examples the residency policy keeps on site, and the labels the site's own
    operators give them (`aivos candidates`, edge/store/reviewed.py)."""
    db.table("site_candidates").create(
        {
            "seq": int,
            "request_id": str,
            "ts": str,
            "text": str,
            "intent": str,
            "confidence": float,
            "threshold": float,
            "decision": str,
            "reason": str,
            "answer": str,
            "model_version": str,
            "label": str,
            "label_kind": str,
            "labelled_at": str,
        },
        pk="seq",
        not_null={"request_id", "ts", "text", "intent", "confidence", "decision", "reason"},
    )
    db.table("site_candidates").create_index(["request_id"], unique=True)
    db.table("site_candidates").create_index(["ts"])


def _m0013_feedback_embedding(db: sqlite_utils.Database) -> None:
    """A vote keeps the rated query's embedding (float16 bytes) and the embedding space it is
    in, so re-ranking can weight it by similarity to a new query (edge/feedback.py). NULL:
    the request was no longer remembered (or voted before this migration)."""
    db.execute("ALTER TABLE passage_feedback ADD COLUMN embedding BLOB")
    db.execute("ALTER TABLE passage_feedback ADD COLUMN embedding_version TEXT")
    db.execute(
        "CREATE INDEX idx_passage_feedback_passage ON passage_feedback(doc_id, chunk_id, ts)"
    )


MIGRATIONS: list[Migration] = [
    ("0001_audit", _m0001_audit),
    ("0002_outbox", _m0002_outbox),
    ("0003_jobs", _m0003_jobs),
    ("0004_memory", _m0004_memory),
    ("0005_tokens", _m0005_tokens),
    ("0006_workflows", _m0006_workflows),
    ("0007_webhook_deliveries", _m0007_webhook_deliveries),
    ("0008_store_probe", _m0008_store_probe),
    ("0009_retention_indexes", _m0009_retention_indexes),
    ("0010_owners", _m0010_owners),
    ("0011_passage_feedback", _m0011_passage_feedback),
    ("0012_site_candidates", _m0012_site_candidates),
    ("0013_feedback_embedding", _m0013_feedback_embedding),
]


def _ensure_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )


def applied(conn: sqlite3.Connection) -> list[str]:
    """Names of the migrations recorded in this database, in the order they were applied."""
    _ensure_table(conn)
    return [r["name"] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]


def apply(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations on an autocommit connection; returns the names applied now."""
    todo = MIGRATIONS if migrations is None else migrations
    done = set(applied(conn))
    db = sqlite_utils.Database(conn)
    ran: list[str] = []
    for name, fn in todo:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check under the write lock: another process may have applied it meanwhile.
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("ROLLBACK")
                continue
            fn(db)
            conn.execute(
                "INSERT INTO _migrations(name, applied_at) VALUES (?, ?)",
                (name, datetime.now(UTC).isoformat()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        ran.append(name)
    return ran
