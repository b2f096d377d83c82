"""Security headers on every console response (pages, API, errors, static files).

The console serves no script at all, so the policy allows none; style attributes stay
allowed (the rollout progress bars use ``style="width: N%"``). Framing is refused both
ways (``frame-ancestors`` and ``X-Frame-Options`` for older browsers): no clickjacking
of the rollout buttons.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "SECURITY_HEADERS", "header_map", "security_headers"]

CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


def header_map() -> dict[str, str]:
    """`SECURITY_HEADERS` as a dict, for responses made outside the middleware (the error
    responses to requests that match no route never pass through it)."""
    return {name.decode(): value.decode() for name, value in SECURITY_HEADERS}


def security_headers(app: ASGIApp) -> ASGIApp:
    """ASGI middleware adding `SECURITY_HEADERS` to every HTTP response it does not set."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware
