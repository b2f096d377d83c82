"""Fetch a published bundle from the hub's object store ``aivos_models`` to a local dir.

The publisher (`aivos models publish`) stores one object per file, named
``<version>/<file name>`` (`shared.fleet.bundle_object_name`): ``signature.json``,
``manifest.json`` and every file the manifest lists. Files are streamed to disk with
``get(name, writeinto=fh)`` (chunks are written from a worker thread as they arrive;
a 20 MiB model is never held in memory). Nothing here trusts what it fetched: the caller
verifies the signature and every sha256 before using the bundle.

A download logs when it starts, then every few seconds the bytes fetched so far and the
rate (`shared.progress.ProgressLog`), so a slow link shows as progress, not as a hang.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import BinaryIO

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError, DigestMismatchError, ObjectNotFoundError

from aivos.shared.bundle import MANIFEST_NAME
from aivos.shared.errors import BundleTampered, LinkDown, ModelNotFound
from aivos.shared.fleet import SIGNATURE_NAME, bundle_object_name
from aivos.shared.progress import ProgressLog
from aivos.shared.subjects import HUB_DOMAIN, MODELS_BUCKET

__all__ = ["download_bundle"]

log = logging.getLogger(__name__)


async def download_bundle(nc: NATS, version: str, dest: Path) -> int:
    """Write bundle `version` into the (empty, existing) dir `dest`; return bytes fetched."""
    js = nc.jetstream(domain=HUB_DOMAIN)
    try:
        store = await js.object_store(MODELS_BUCKET)
    except BucketNotFoundError as exc:
        raise ModelNotFound(MODELS_BUCKET, "the model object store does not exist") from exc
    progress = ProgressLog(log, f"bundle {version} download", unit="bytes")
    total = 0
    total += await _fetch(store, version, SIGNATURE_NAME, dest, progress)
    total += await _fetch(store, version, MANIFEST_NAME, dest, progress)
    try:
        listed = json.loads((dest / MANIFEST_NAME).read_bytes())["files"]
        names = [str(n) for n in listed]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleTampered(f"{version}/{MANIFEST_NAME}", "manifest lists no files") from exc
    for name in names:
        if name in (SIGNATURE_NAME, MANIFEST_NAME) or Path(name).name != name:
            raise BundleTampered(f"{version}/{MANIFEST_NAME}", f"bad file name {name!r}")
        total += await _fetch(store, version, name, dest, progress)
    log.info("bundle %s downloaded (%d files, %d bytes)", version, len(names) + 2, total)
    return total


class _Counting:
    """The file an object is streamed into, counting bytes for the progress log."""

    def __init__(self, fh: BinaryIO, progress: ProgressLog) -> None:
        self._fh, self._progress = fh, progress

    def write(self, data: bytes) -> int:
        n = self._fh.write(data)
        self._progress.advance(len(data))
        return n


async def _fetch(store: object, version: str, name: str, dest: Path, progress: ProgressLog) -> int:
    obj = bundle_object_name(version, name)
    path = dest / name
    try:
        with path.open("wb") as fh:
            await store.get(obj, writeinto=_Counting(fh, progress))  # type: ignore[attr-defined]
    except ObjectNotFoundError as exc:
        raise ModelNotFound(obj, "not in the model object store") from exc
    except DigestMismatchError as exc:
        raise BundleTampered(obj, "object digest does not match its metadata") from exc
    except (ConnectionError, TimeoutError, NatsError) as exc:
        raise LinkDown("hub", f"download of {obj} interrupted") from exc
    return path.stat().st_size
