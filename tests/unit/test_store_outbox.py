import msgspec
import pytest

from aivos.edge.store import AuditRecord, Store
from aivos.shared.errors import QuotaExceeded


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path, outbox_quota=3)
    yield s
    s.close()


async def test_each_audit_row_is_enqueued_with_a_stable_id(store):
    rows = [await store.append_audit(AuditRecord(id=f"r{i}", decision="local")) for i in range(3)]
    pending = store.outbox_pending(10)
    assert [p.id for p in pending] == ["audit-r0", "audit-r1", "audit-r2"]
    assert [p.seq for p in pending] == sorted(p.seq for p in pending)
    assert all(p.data_class == "audit" and p.attempts == 0 for p in pending)
    assert msgspec.json.decode(pending[1].payload)["hash"] == rows[1].hash
    assert store.outbox_depth() == 3


async def test_full_outbox_refuses_loudly_and_writes_nothing(store):
    for i in range(3):
        await store.append_audit(AuditRecord(id=f"r{i}"))
    with pytest.raises(QuotaExceeded):
        await store.append_audit(AuditRecord(id="r3"))
    assert store.outbox_refused_total == 1
    assert store.get_audit("r3") is None
    assert store.audit_count() == 3
    assert store.verify_audit().ok


async def test_local_only_work_goes_on_when_full(store):
    for i in range(3):
        await store.enqueue("telemetry", {"i": i})
    row = await store.append_audit(AuditRecord(id="local"), sync=False)
    assert row.seq == 1
    await store.put_fact("s1", "lang", "fr", sync=False)
    assert store.get_fact("s1", "lang").value == "fr"
    with pytest.raises(QuotaExceeded):
        await store.put_fact("s1", "city", "Lyon", sync=True)
    assert store.get_fact("s1", "city") is None
    assert store.outbox_depth() == 3


async def test_marking_sent_frees_space_and_is_idempotent(store):
    ids = [await store.enqueue("memory", {"i": i}, subject="fact") for i in range(3)]
    assert ids == sorted(ids)  # time-ordered ids
    assert await store.mark_sent(ids[:2]) == 2
    assert await store.mark_sent(ids[:2]) == 0
    assert store.outbox_depth() == 1
    assert [r.id for r in store.outbox_pending(10)] == [ids[2]]
    await store.append_audit(AuditRecord(id="after"))
    assert store.outbox_depth() == 2


async def test_pending_pages_in_order(store):
    ids = [await store.enqueue("telemetry", {"i": i}) for i in range(3)]
    first = store.outbox_pending(2)
    rest = store.outbox_pending(2, after_seq=first[-1].seq)
    assert [r.id for r in first + rest] == ids
    await store.record_attempt(ids[:1])
    assert store.outbox_pending(1)[0].attempts == 1
