"""Sign a bundle and upload it to the JetStream object store ``aivos_models`` (hub domain).

Objects are ``<version>/<file>`` for every file the manifest lists, then ``manifest.json``,
then ``signature.json`` last: a bundle whose signature object exists is complete. Files are
streamed from disk (never read whole into memory).

Each object's upload is retried while JetStream cannot answer (timeouts, 503s;
`aivos.shared.jsready`) for up to `ready_timeout_s`, from the start of its file: a put
under the same name replaces the object (fresh chunks, then the new meta; nats-py purges
the chunks of a put that failed and those of the object replaced), so a retry after a put
that was applied but not answered uploads the same bytes once more and nothing else. The
order holds: an object is retried until it is stored before the next one starts.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js.api import ObjectInfo, ObjectStoreConfig
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from aivos.cloud.jetstream import open_object_store
from aivos.shared.bundle import MANIFEST_NAME, load_bundle_manifest
from aivos.shared.fleet import SIGNATURE_NAME, BundleSignature, bundle_object_name, sign_bundle
from aivos.shared.jsready import connection_of, until_jetstream_answers
from aivos.shared.subjects import MODELS_BUCKET

__all__ = ["PublishResult", "open_models_store", "publish_bundle"]

log = logging.getLogger(__name__)


class PublishResult(msgspec.Struct, frozen=True):
    bundle_version: str
    key_id: str
    objects: list[str]
    total_bytes: int


async def open_models_store(
    js: JetStreamContext, *, create: bool = True, replicas: int = 1, ready_timeout_s: float = 60.0
) -> ObjectStore:
    """The model object store; created (when missing) at `replicas` (``--js-replicas``).
    Retried for up to `ready_timeout_s` while JetStream cannot answer (`open_object_store`)."""
    return await open_object_store(
        js,
        MODELS_BUCKET,
        ObjectStoreConfig(replicas=replicas),
        create=create,
        ready_timeout_s=ready_timeout_s,
    )


async def publish_bundle(
    js: JetStreamContext,
    bundle_dir: str | Path,
    private_key: Ed25519PrivateKey,
    *,
    replicas: int = 1,
    ready_timeout_s: float = 60.0,
) -> PublishResult:
    """Verify + sign `bundle_dir` (writes its ``signature.json``), then upload it (creating
    the object store at `replicas` when it does not exist yet). Opening the store and each
    upload are retried for up to `ready_timeout_s` while JetStream cannot answer."""
    root = Path(bundle_dir)
    manifest = load_bundle_manifest(root)
    signature: BundleSignature = sign_bundle(root, private_key)
    store = await open_models_store(js, replicas=replicas, ready_timeout_s=ready_timeout_s)
    names = [*sorted(manifest.files), MANIFEST_NAME, SIGNATURE_NAME]
    objects: list[str] = []
    total = 0
    for name in names:
        obj = bundle_object_name(manifest.bundle_version, name)
        info = await until_jetstream_answers(
            functools.partial(_upload, store, obj, root / name),
            what=f"uploading {obj}",
            timeout_s=ready_timeout_s,
            logger=log,
            nc=connection_of(js),
        )
        objects.append(obj)
        total += info.size or 0
        log.info("published %s (%d bytes)", obj, info.size or 0)
    return PublishResult(manifest.bundle_version, signature.key_id, objects, total)


async def _upload(store: ObjectStore, obj: str, path: Path) -> ObjectInfo:
    """One try: the whole file, from its start (a failed try may have read part of it)."""
    with path.open("rb") as fh:
        return await store.put(obj, fh)
