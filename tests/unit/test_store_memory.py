import pytest

from aivos.edge.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path, memory_turns_keep=3, memory_retention_days=7)
    yield s
    s.close()


async def test_only_the_last_turns_are_kept_per_session(store):
    for i in range(5):
        await store.add_turn("s1", "user", f"turn {i}")
    await store.add_turn("s2", "user", "other")
    assert [t.text for t in store.turns("s1")] == ["turn 2", "turn 3", "turn 4"]
    assert [t.text for t in store.turns("s2")] == ["other"]


async def test_facts_put_get_list_delete(store):
    await store.put_fact("s1", "name", {"first": "Ada"})
    await store.put_fact("s1", "lang", "en")
    await store.put_fact("s1", "lang", "fr")
    assert store.get_fact("s1", "lang").value == "fr"
    assert [f.key for f in store.list_facts("s1")] == ["lang", "name"]
    assert await store.delete_fact("s1", "lang") is True
    assert await store.delete_fact("s1", "lang") is False
    assert store.get_fact("s1", "lang") is None
    await store.add_turn("s1", "user", "hi")
    assert await store.delete_session("s1") == 2
    assert store.turns("s1") == [] and store.list_facts("s1") == []


async def test_retention_purges_old_memory_only(store):
    await store.add_turn("s1", "user", "old")
    await store.put_fact("s1", "old", 1)
    await store.transact(
        lambda c: (
            c.execute("UPDATE memory_turns SET ts = '2000-01-01T00:00:00+00:00'"),
            c.execute("UPDATE memory_facts SET updated_at = '2000-01-01T00:00:00+00:00'"),
        )
    )
    await store.add_turn("s1", "user", "new")
    await store.put_fact("s1", "new", 2)
    assert await store.purge_memory() == 2
    assert [t.text for t in store.turns("s1")] == ["new"]
    assert [f.key for f in store.list_facts("s1")] == ["new"]


async def test_synced_memory_goes_to_the_outbox_under_its_own_class(tmp_path):
    store = Store.open(tmp_path, sync_memory=True)
    try:
        await store.put_fact("s1", "lang", "fr")
        await store.add_turn("s1", "user", "bonjour", sync=False)
        pending = store.outbox_pending(10)
        assert [(p.data_class, p.subject) for p in pending] == [("memory", "fact")]
    finally:
        store.close()
