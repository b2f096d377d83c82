"""Cloud ingest of synced site records (audit, memory) from the hub stream ``AIVOS_SYNC``.

    store = CloudStore.open(data_dir)                 # SQLite (WAL), default backend
    ingest = SyncIngest(store)                        # durable pull consumer
    await ingest.start(nc)                            # nc: connected to the hub
    ...; await ingest.stop(); store.close()

`CloudStore` implements the small `IngestStore` Protocol; records are keyed by
``(site, id)`` and inserted once (a redelivery or a resend is a no-op), so the effect of
the whole pipeline is exactly once.
"""

from typing import Any

from aivos.cloud.ingest.store import CloudRecord, CloudStore, IngestStore, default_data_dir

__all__ = [
    "CloudRecord",
    "CloudStore",
    "IngestStore",
    "IngestStats",
    "SyncIngest",
    "default_data_dir",
    "run_ingest",
]


def __getattr__(name: str) -> Any:
    # the consumer pulls in the NATS client; `aivos cloud stats|audit` do not need it
    if name in ("IngestStats", "SyncIngest", "run_ingest"):
        from aivos.cloud.ingest import consumer

        return getattr(consumer, name)
    raise AttributeError(name)
