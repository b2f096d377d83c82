"""Backend for any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama-server,
Ollama...) with ``stream: true`` server-sent events, via httpx (fully async)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx

from aivos.cloud.worker.backend import BackendError, Finished, finish_reason_of
from aivos.cloud.worker.prompt import build_messages
from aivos.shared.messages import GenerateRequest

__all__ = ["OpenAIBackend"]

log = logging.getLogger(__name__)


class OpenAIBackend:
    """`GenerationBackend` that streams from ``{base_url}/chat/completions``.

    `base_url` is the API root, e.g. ``http://127.0.0.1:8000/v1``.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "default",
        api_key: str | None = None,
        timeout_s: float = 60.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=5.0), headers=headers
        )

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str | Finished]:
        body = {
            "model": self.model,
            "messages": build_messages(request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
            # the last event then carries usage.prompt_tokens (the endpoint's tokenizer);
            # an endpoint that ignores it leaves the router to estimate tokens in
            "stream_options": {"include_usage": True},
        }
        url = f"{self.base_url}/chat/completions"
        reason: str | None = None
        prompt_tokens: int | None = None
        try:
            async with self._client.stream("POST", url, json=body) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread())[:200].decode(errors="replace")
                    raise BackendError(f"{url} answered {resp.status_code}: {detail}")
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    text, finished = _parse_event(data)
                    if text:
                        yield text
                    if finished is not None:
                        reason = finished.reason or reason
                        prompt_tokens = finished.prompt_tokens or prompt_tokens
        except httpx.HTTPError as exc:
            raise BackendError(f"{url}: {type(exc).__name__}: {exc}") from exc
        if reason is not None or prompt_tokens is not None:
            yield Finished(reason, prompt_tokens)

    async def aclose(self) -> None:
        await self._client.aclose()


def _parse_event(data: str) -> tuple[str, Finished | None]:
    """The text of one SSE event and, on the last ones, why the endpoint stopped and how
    many prompt tokens it counted (``usage``, asked for with ``include_usage``)."""
    try:
        event = json.loads(data)
        usage = event.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        counted = prompt_tokens if isinstance(prompt_tokens, int) and prompt_tokens > 0 else None
        choices = event.get("choices") or []
        if not choices:
            return "", Finished(None, counted) if counted else None
        delta = choices[0].get("delta") or {}
        finished = finish_reason_of(choices[0].get("finish_reason"))
        if counted:
            finished = Finished(finished.reason if finished else None, counted)
        return str(delta.get("content") or ""), finished
    except (ValueError, AttributeError, TypeError) as exc:
        raise BackendError(f"bad SSE event from endpoint: {data[:120]!r}") from exc
