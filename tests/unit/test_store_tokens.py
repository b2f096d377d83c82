import pytest

from aivos.edge.store import Store
from aivos.edge.store.db import db_path
from aivos.edge.store.tokens import scope_allows
from aivos.shared.errors import DataError, NotFound


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path, token_recheck_s=0.0)
    yield s
    s.close()


def test_scopes_nest():
    assert scope_allows("admin", "operator") and scope_allows("admin", "client")
    assert scope_allows("operator", "client") and not scope_allows("operator", "admin")
    assert not scope_allows("client", "operator") and not scope_allows("nobody", "client")


async def test_create_authenticate_revoke(store):
    name, token = await store.create_token("operator", "ops")
    assert name == "ops" and token.startswith("aivos_")
    info = store.authenticate(token)
    assert info.name == "ops" and info.scope == "operator"
    assert store.authenticate(token + "x") is None
    assert store.authenticate("not-a-token") is None
    await store.revoke_token("ops")
    assert store.authenticate(token) is None
    with pytest.raises(NotFound):
        await store.revoke_token("ops")


async def test_names_are_unique_and_scopes_checked(store):
    await store.create_token("client", "app")
    with pytest.raises(DataError):
        await store.create_token("client", "app")
    with pytest.raises(DataError):
        await store.create_token("root", "x")
    await store.revoke_token("app")
    _, token = await store.create_token("admin", "app")  # a revoked name may be reused
    assert store.authenticate(token).scope == "admin"


async def test_revocation_by_another_process_is_seen(tmp_path, store):
    _, token = await store.create_token("client", "kiosk")
    assert store.authenticate(token) is not None
    other = Store.open(tmp_path)  # the CLI's own connection
    other.revoke_token_sync("kiosk")
    other.close()
    assert store.authenticate(token) is None


async def test_only_hashes_reach_the_disk(tmp_path, store):
    tokens = [(await store.create_token("client", f"t{i}"))[1] for i in range(3)]
    store.close()
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("aivos.db"))
    assert db_path(tmp_path).exists()
    for token in tokens:
        secret = token.split("_", 2)[2]  # aivos_<id>_<secret>; the secret may contain "_"
        assert secret.encode() not in blobs
        assert token.encode() not in blobs
