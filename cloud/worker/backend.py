"""The generation backend Protocol, the error it raises, the `Finished` marker a backend
ends its stream with, and a helper to run a blocking token iterator in a thread without
blocking the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aivos.shared.errors import AivosError
from aivos.shared.messages import FinishReason, GenerateRequest

__all__ = ["GenerationBackend", "BackendError", "Finished", "finish_reason_of", "iterate_in_thread"]


class BackendError(AivosError):
    """The backend failed to generate (model error, HTTP error from the endpoint...)."""

    code = "backend_error"


@dataclass(frozen=True)
class Finished:
    """The last item of a backend's stream when the model says why it stopped, and/or how
    many tokens its tokenizer made of the prompt (None: not known; the router then
    estimates them from the characters)."""

    reason: FinishReason | None
    prompt_tokens: int | None = None


def finish_reason_of(value: object) -> Finished | None:
    """An OpenAI-style ``finish_reason`` (llama-cpp-python uses the same) as `Finished`:
    ``length`` means ``max_tokens`` cut the text; any other reason the model gave
    (``stop``, ``tool_calls``, ``content_filter``) means it ended the text itself."""
    if not isinstance(value, str) or not value:
        return None
    return Finished("length" if value == "length" else "stop")


@runtime_checkable
class GenerationBackend(Protocol):
    """What a worker needs from a model. `stream` yields text chunks as they are produced,
    and may end with one `Finished` (a backend that yields none leaves the reason unknown);
    closing the iterator early (deadline, shutdown) must stop generation."""

    name: str

    def stream(self, request: GenerateRequest) -> AsyncIterator[str | Finished]: ...

    async def aclose(self) -> None: ...


_END = object()


async def iterate_in_thread(
    make_iter: Callable[[threading.Event], Iterator[str | Finished]], *, name: str = "gen"
) -> AsyncIterator[str | Finished]:
    """Run a blocking iterator in its own thread and yield its items on the event loop.

    `make_iter` receives a stop event; the iterator must check it between items. When the
    consumer stops early (``aclose``), the event is set and the thread finishes soon after.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def _put(item: object) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def _run() -> None:
        try:
            for item in make_iter(stop):
                if stop.is_set():
                    break
                _put(item)
        except BaseException as exc:  # forwarded to the consumer
            _put(exc)
        finally:
            _put(_END)

    thread = threading.Thread(target=_run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise BackendError(f"{name}: {item}") from item
            assert isinstance(item, (str, Finished))
            yield item
    finally:
        stop.set()
