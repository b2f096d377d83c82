"""The `http` connector: allow-listed base URLs, credentials from the secrets file,
timeouts, retries with capped exponential back-off + jitter on retryable failures only
(connect errors, timeouts, 5xx, 429), and an ``Idempotency-Key`` header on every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from aivos.edge.workflows.backoff import backoff_delay, retryable_status
from aivos.edge.workflows.secrets import Secrets
from aivos.edge.workflows.settings import ConnectorSettings
from aivos.shared.errors import StepFailed

__all__ = ["HttpCaller", "quote_segment", "IDEMPOTENCY_HEADER"]

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
_MAX_BODY = 1024 * 1024


def quote_segment(value: str) -> str:
    """Escape a templated value for a URL path: no `/`, `?`, `#` or `..` can get through."""
    return quote(value, safe="") if value not in (".", "..") else quote(value.replace(".", "%2E"))


def _parse(resp: httpx.Response) -> Any:
    content = resp.content[:_MAX_BODY]
    if "json" in resp.headers.get("content-type", ""):
        try:
            return resp.json()
        except ValueError:
            pass
    return content.decode("utf-8", "replace")


class HttpCaller:
    def __init__(
        self,
        connectors: Mapping[str, ConnectorSettings],
        secrets: Secrets,
        *,
        max_connections: int = 2000,
    ) -> None:
        self._connectors = dict(connectors)
        self._secrets = secrets
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=256),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def url_for(self, connector: str, path: str) -> str:
        conf = self._connectors.get(connector)
        if conf is None:
            raise StepFailed("not_allowed", f"connector {connector!r} is not on the allow-list")
        base = httpx.URL(conf.base_url)
        url = httpx.URL(conf.base_url.rstrip("/") + path)
        if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port) or not (
            url.path.startswith(base.path.rstrip("/") + "/") or url.path == base.path
        ):
            raise StepFailed("not_allowed", "the rendered URL leaves the connector's base URL")
        return str(url)

    async def call(
        self,
        connector: str,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        backoff_cap_s: float,
        idem_key: str,
        trace_id: str,
        attempt_log: list[dict[str, Any]],
        on_retry: Any = None,
    ) -> dict[str, Any]:
        """Call until success, a non-retryable failure, or retries are spent.

        Each attempt is appended to `attempt_log`. Raises StepFailed on failure."""
        url = self.url_for(connector, path)
        conf = self._connectors[connector]
        headers = {IDEMPOTENCY_HEADER: idem_key, "X-Aivos-Trace-Id": trace_id}
        if conf.credential is not None:
            cred = self._secrets.credentials.get(conf.credential)
            if cred is None:
                raise StepFailed(
                    "no_credential", f"credential {conf.credential!r} is not in the secrets file"
                )
            headers[cred.header] = cred.value
        timeout = min(timeout_s, conf.max_timeout_s)
        total = retries + 1
        last: StepFailed | None = None
        for attempt in range(1, total + 1):
            started = time.perf_counter()
            entry: dict[str, Any] = {"attempt": len(attempt_log) + 1, "at": time.time()}
            retry_after: float | None = None
            try:
                resp = await self._client.request(
                    method,
                    url,
                    params=dict(query or {}),
                    json=body,
                    headers=headers,
                    timeout=timeout,
                )
            except httpx.TimeoutException as exc:
                last = StepFailed(
                    "timeout", f"{connector}: no answer within {timeout}s", retryable=True
                )
                entry.update(outcome="timeout", error=type(exc).__name__)
            except httpx.TransportError as exc:
                last = StepFailed(
                    "connect_error", f"{connector}: {type(exc).__name__}", retryable=True
                )
                entry.update(outcome="connect_error", error=type(exc).__name__)
            else:
                entry["status"] = resp.status_code
                if resp.status_code < 400:
                    entry.update(outcome="ok", ms=round((time.perf_counter() - started) * 1000, 3))
                    attempt_log.append(entry)
                    return {"status": resp.status_code, "body": _parse(resp)}
                retryable = retryable_status(resp.status_code)
                last = StepFailed(
                    f"http_{resp.status_code}",
                    f"{connector} answered {resp.status_code}",
                    retryable=retryable,
                )
                entry.update(outcome="retryable_status" if retryable else "rejected")
                if resp.status_code == 429:
                    try:
                        retry_after = float(resp.headers.get("retry-after", ""))
                    except ValueError:
                        retry_after = None
            entry["ms"] = round((time.perf_counter() - started) * 1000, 3)
            attempt_log.append(entry)
            if not last.retryable or attempt == total:
                break
            delay = backoff_delay(attempt, backoff_s, backoff_cap_s)
            if retry_after is not None:
                delay = max(delay, min(retry_after, backoff_cap_s))
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(delay)
        assert last is not None
        raise last
