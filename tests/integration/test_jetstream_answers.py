"""What the JetStream retry helper (`aivos.shared.jsready`) makes of real answers.

On real nats-servers: an account without JetStream on a server that has it answers a 503
with ``err_code`` 10039, which is raised at once (`JetStreamNotEnabled`); a server without
JetStream at all has no responder (a 503 without a code), which stays "not ready".

`publish_bundle` on a private hub (its object store has a fixed name), through `FlakyApi`
(tests/fixtures/flaky_jetstream.py): an object whose upload was stored but not answered,
and one answered with a 503, are uploaded again by name; the store ends up holding each
file once, and ``signature.json`` last."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from hashlib import sha256
from pathlib import Path

import msgspec
import nats
import pytest
from nats.js.api import KeyValueConfig
from nats.js.errors import ServiceUnavailableError

from aivos.cloud.fleet.publish import publish_bundle
from aivos.cloud.jetstream import open_key_value
from aivos.shared.bundle import FORMAT_VERSION, MANIFEST_NAME, Manifest, TrainingSummary
from aivos.shared.errors import JetStreamRefused
from aivos.shared.fleet import SIGNATURE_NAME, generate_signing_key, load_private_key
from aivos.shared.jsready import JetStreamNotEnabled
from aivos.shared.natsconf import NatsServer
from aivos.shared.subjects import MODELS_BUCKET
from tests.fixtures.flaky_jetstream import FlakyApi, WritesViaFlaky
from tests.fixtures.nats import serve_config
from tests.fixtures.wait import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

# one account with JetStream, one without (no `jetstream: enabled`)
_ACCOUNTS_CONF = """
listen: 127.0.0.1:{port}
jetstream {{ store_dir: "{store}" }}
accounts {{
  WITH_JS: {{ jetstream: enabled, users: [ {{ user: "js", password: "js" }} ] }}
  PLAIN: {{ users: [ {{ user: "plain", password: "plain" }} ] }}
}}
"""
_NO_JETSTREAM_CONF = "listen: 127.0.0.1:{port}\n"


@pytest.fixture
def accounts_server(tmp_path: Path) -> Iterator[int]:
    yield from serve_config(tmp_path, _ACCOUNTS_CONF)


@pytest.fixture
def server_without_jetstream(tmp_path: Path) -> Iterator[int]:
    yield from serve_config(tmp_path, _NO_JETSTREAM_CONF)


async def test_an_account_without_jetstream_is_named_at_once_not_retried(
    accounts_server: int, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"nats://plain:plain@127.0.0.1:{accounts_server}"
    nc = await eventually(lambda: nats.connect(url), timeout=30, what="the server up")
    caplog.set_level("INFO", logger="aivos.cloud.jetstream")
    try:
        with pytest.raises(JetStreamNotEnabled) as raised:
            await open_key_value(nc.jetstream(), KeyValueConfig(bucket="b"), ready_timeout_s=10)
    finally:
        await nc.close()

    assert isinstance(raised.value, JetStreamRefused)
    assert raised.value.code == "jetstream_not_enabled"
    cause = raised.value.__cause__
    assert isinstance(cause, ServiceUnavailableError) and cause.err_code == 10039
    assert str(raised.value).startswith("KV bucket b: JetStream is not enabled for this")
    assert "`jetstream: enabled`" in str(raised.value)
    assert "JetStream not ready" not in caplog.text  # no retry


async def test_the_account_with_jetstream_on_the_same_server_opens_the_bucket(
    accounts_server: int,
) -> None:
    """The control: the same server and call, an account that has JetStream."""
    url = f"nats://js:js@127.0.0.1:{accounts_server}"
    nc = await eventually(lambda: nats.connect(url), timeout=30, what="the server up")
    try:
        kv = await open_key_value(nc.jetstream(), KeyValueConfig(bucket="b"), ready_timeout_s=10)
        assert await kv.put("k", b"v") == 1
    finally:
        await nc.close()


async def test_a_server_without_jetstream_stays_not_ready(
    server_without_jetstream: int, caplog: pytest.LogCaptureFixture
) -> None:
    """No responder on the API: nats-py raises a 503 without a code. That is what a node
    whose JetStream is still starting looks like too, so it is retried until the
    deadline."""
    url = f"nats://127.0.0.1:{server_without_jetstream}"
    nc = await eventually(lambda: nats.connect(url), timeout=30, what="the server up")
    caplog.set_level("INFO", logger="aivos.cloud.jetstream")
    try:
        with pytest.raises(ServiceUnavailableError) as raised:
            await open_key_value(nc.jetstream(), KeyValueConfig(bucket="b"), ready_timeout_s=1)
    finally:
        await nc.close()

    assert raised.value.err_code is None
    assert "KV bucket b: JetStream not ready (ServiceUnavailableError" in caplog.text


_FILES = {"model.onnx": b"onnx bytes " * 100, "tokenizer.json": b'{"tokens": []}'}


def _bundle(root: Path, version: str) -> Path:
    """A bundle `publish_bundle` accepts: a manifest with the files' hashes (the files'
    contents are never loaded as a model here)."""
    root.mkdir()
    for name, data in _FILES.items():
        (root / name).write_bytes(data)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        bundle_version=version,
        labels=["a", "b"],
        threshold=0.5,
        embedding_model_id="e",
        embedding_dim=4,
        max_length=16,
        quantization="none",
        training=TrainingSummary("t", "v", 2, 2, 2, 1, False, 0.1),
        metrics={},
        files={name: sha256(data).hexdigest() for name, data in _FILES.items()},
        created_at="2026-01-01T00:00:00Z",
    )
    (root / MANIFEST_NAME).write_bytes(msgspec.json.encode(manifest))
    return root


def _meta_subject(obj: str) -> str:
    name = base64.urlsafe_b64encode(obj.encode()).decode()
    return f"$O.{MODELS_BUCKET}.M.{name}"


async def test_bundle_objects_whose_upload_failed_are_uploaded_again_signature_last(
    tmp_path: Path, nats_hub_factory: Callable[[], NatsServer]
) -> None:
    """model.onnx is stored but its meta's answer is lost; tokenizer.json's chunk gets a
    503. Each is uploaded again by name before the next object starts: every object holds
    its file's bytes once (no chunk of a replaced upload left), signature.json last."""
    nc = await nats.connect(nats_hub_factory().url)
    bundle = _bundle(tmp_path / "bundle", "retry-1")
    key = load_private_key(generate_signing_key(tmp_path / "keys")[0])
    # each small file is one chunk publish, then one meta publish
    api = await FlakyApi(nc, {"$O": ["pass", "apply_silent", "pass", "pass", "503"]}).start()
    try:
        result = await publish_bundle(WritesViaFlaky(nc), bundle, key, ready_timeout_s=30)

        names = [*sorted(_FILES), MANIFEST_NAME, SIGNATURE_NAME]
        assert result.objects == [f"retry-1/{name}" for name in names]
        assert api.actions("$O") == [
            "pass",  # model.onnx: chunk
            "apply_silent",  # meta stored, answer lost: a timeout
            "pass",  # model.onnx again: chunk
            "pass",  # meta
            "503",  # tokenizer.json: chunk refused
            *["pass"] * 6,  # tokenizer.json again, manifest.json, signature.json
        ]
        store = await nc.jetstream().object_store(MODELS_BUCKET)
        for name in names:
            stored = await store.get(f"retry-1/{name}")
            assert stored.data == (bundle / name).read_bytes(), name
        js = nc.jetstream()
        state = (await js.stream_info(f"OBJ_{MODELS_BUCKET}")).state
        assert state.messages == 2 * len(names)  # one chunk and one meta per object
        last = await js.get_msg(f"OBJ_{MODELS_BUCKET}", state.last_seq)
        assert last.subject == _meta_subject(f"retry-1/{SIGNATURE_NAME}")
    finally:
        await nc.close()
