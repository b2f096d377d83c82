"""Notices of answers a worker delivered straight to the edge, batched for the model router.

A router's request that does not stream carries the header ``Aivos-Reply-Direct: <edge
inbox> <notices subject>`` (`cloud.worker.service`): the worker publishes the `Done` to the
edge's inbox itself, and the router, which no longer sees it, learns of it from a
`Delivered` notice (which attempt, which version, how many tokens) for its breaker, usage
and quotas. Notices wait up to `window_s` and go out as one message per router (its
notices subject), so a router hears of many answers in one message instead of one each.
A notice lost with its worker ends that attempt on the router's timer, as a dead worker.
For a site under a quota the router asks for the notice at once (`take`): it is published
ahead of the `Done`, so the router counts the answer before the site can send another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

__all__ = [
    "NOTICE_GRACE_S",
    "NOTICE_WINDOW_S",
    "Delivered",
    "NoticeBatcher",
    "decode_notices",
    "encode_notices",
]

NOTICE_WINDOW_S = 0.01  # how long a notice may wait for others to the same router
# what a router adds to an attempt's first timer when the answer may come as a notice
NOTICE_GRACE_S = 5 * NOTICE_WINDOW_S
_MAX_BATCH = 256


class Delivered(msgspec.Struct, frozen=True, array_like=True):
    """One `Done` the worker sent to the edge itself."""

    reply: str  # the reply subject of the router's attempt (the router's key for it)
    version: str  # what the `Done` named ("" when the worker knows no version)
    n_tokens: int
    prompt_tokens: int = 0  # as the model's tokenizer counted them (0: not known)
    held_ms: float = 0.0  # how long the notice waited in its batch


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[Delivered])


def encode_notices(notices: list[Delivered]) -> bytes:
    return _encoder.encode(notices)


def decode_notices(data: bytes) -> list[Delivered]:
    return _decoder.decode(data)


Publish = Callable[[str, bytes], Coroutine[Any, Any, None]]
_Pending = tuple[str, str, int, int, float]  # reply, version, n_tokens, prompt_tokens, added


class NoticeBatcher:
    """Collects `Delivered` notices per router and publishes them in batches."""

    def __init__(
        self, publish: Publish, window_s: float = NOTICE_WINDOW_S, max_batch: int = _MAX_BATCH
    ) -> None:
        self._publish = publish
        self.window_s = window_s
        self.max_batch = max_batch
        self._pending: dict[str, list[_Pending]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def add(
        self, subject: str, reply: str, version: str, n_tokens: int, prompt_tokens: int
    ) -> None:
        """Queue a notice for the router listening on `subject`."""
        items = self._pending.get(subject)
        if items is None:
            items = self._pending[subject] = []
        items.append((reply, version, n_tokens, prompt_tokens, time.monotonic()))
        if len(items) >= self.max_batch:
            self._send(subject, self._pending.pop(subject))
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window_s, self.flush)

    def take(
        self, subject: str, reply: str, version: str, n_tokens: int, prompt_tokens: int
    ) -> bytes:
        """This notice with those queued for `subject`, encoded, for the caller to send now."""
        items = self._pending.pop(subject, [])
        items.append((reply, version, n_tokens, prompt_tokens, time.monotonic()))
        return self._encode(items)

    def flush(self) -> None:
        """Send every queued notice now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for subject, items in pending.items():
            self._send(subject, items)

    @staticmethod
    def _encode(items: list[_Pending]) -> bytes:
        now = time.monotonic()
        return encode_notices(
            [Delivered(r, v, n, p, (now - added) * 1000.0) for r, v, n, p, added in items]
        )

    def _send(self, subject: str, items: list[_Pending]) -> None:
        task = asyncio.create_task(self._publish(subject, self._encode(items)))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def close(self) -> None:
        """Send what is queued and wait until it is handed to the connection."""
        self.flush()
        if self._sending:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._sending, return_exceptions=True)
