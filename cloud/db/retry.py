"""Run a transaction again when PostgreSQL aborted it to break a deadlock.

Two writers that lock the same rows in different orders deadlock; PostgreSQL then aborts
one of them (`StoreConflict`) and lets the other go on. The aborted one committed
nothing, so running the whole transaction function again is safe and is what the victim
should do — at once, after a short random pause so two victims do not collide again in
step. A function passed here must do nothing outside the database that it cannot repeat.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from aivos.cloud.db.engine import Conn, Engine, StoreConflict

__all__ = ["transact"]

T = TypeVar("T")

log = logging.getLogger(__name__)


def transact(engine: Engine, fn: Callable[[Conn], T], *, attempts: int = 5) -> T:
    """``fn(conn)`` in one write transaction of `engine`, run again (up to `attempts` times
    in all) when it is aborted with `StoreConflict`; the last conflict is raised."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.tx() as conn:
                return fn(conn)
        except StoreConflict as exc:
            if attempt == attempts:
                raise
            log.warning("%s; running the transaction again (attempt %d)", exc, attempt + 1)
            time.sleep(random.uniform(0.01, 0.05) * attempt)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
