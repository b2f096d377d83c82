import pytest

from aivos.edge.store import Store
from aivos.shared.errors import DataError, NotFound


async def test_jobs_survive_reopen(tmp_path):
    store = Store.open(tmp_path)
    job = await store.create_job(
        "escalate",
        {"text": "why was I charged twice"},
        state="waiting_for_uplink",
        callback_url="http://127.0.0.1:9/cb",
        deadline="2030-01-01T00:00:00+00:00",
    )
    store.close()

    store = Store.open(tmp_path)
    try:
        again = store.get_job(job.id)
        assert again == job
        assert [j.id for j in store.list_jobs("waiting_for_uplink")] == [job.id]
    finally:
        store.close()


async def test_claim_update_and_finish(tmp_path):
    store = Store.open(tmp_path)
    try:
        a = await store.create_job("escalate", {"n": 1})
        b = await store.create_job("escalate", {"n": 2}, state="waiting_for_uplink")
        claimed = await store.claim_job()
        assert claimed.id == a.id and claimed.state == "running" and claimed.attempts == 1
        assert (await store.claim_job()).id == b.id
        assert await store.claim_job() is None
        done = await store.update_job(a.id, state="done", result={"answer": "ok"})
        assert done.result == {"answer": "ok"} and done.error is None
        failed = await store.update_job(b.id, state="failed", error="deadline exceeded")
        assert failed.error == "deadline exceeded"
        assert {j.id for j in store.list_jobs(["done", "failed"])} == {a.id, b.id}
    finally:
        store.close()


async def test_bad_state_and_unknown_job_are_refused(tmp_path):
    store = Store.open(tmp_path)
    try:
        with pytest.raises(DataError):
            await store.create_job("escalate", {}, state="sleeping")
        with pytest.raises(NotFound):
            store.get_job("nope")
        with pytest.raises(NotFound):
            await store.update_job("nope", state="done")
    finally:
        store.close()
