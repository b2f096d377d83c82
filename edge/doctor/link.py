"""The link checks: the site's NATS server answers, the hub's leaf port is reachable from
this box, and the site kit's certificates are valid for a while yet."""

from __future__ import annotations

import asyncio
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aivos.edge.doctor.box import Box, Finding, fail, ok, warn
from aivos.shared.natsconf.permissions import site_inbox_prefix

__all__ = ["check_nats", "check_certificates", "connect", "WARN_DAYS"]

WARN_DAYS = 30  # a certificate that expires sooner is reported (rotate with `aivos fleet rotate`)
_TIMEOUT_S = 3
_REMOTE_URL = re.compile(r"(?:nats-leaf|tls|nats|wss?)://[^\"'\s,\]]+")


class _Unreachable(Exception):
    pass


async def connect(url: str, site: str) -> Any:
    """A NATS connection as the site's agent makes it (two tries, no reconnects); raises
    `_Unreachable` with the server's own reason."""
    import nats

    errors: list[Exception] = []

    async def remember(exc: Exception) -> None:
        errors.append(exc)

    async def attempt() -> Any:
        # nats-py retries a refused server forever unless it has a reconnect limit
        return await nats.connect(
            url,
            connect_timeout=_TIMEOUT_S,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.2,
            inbox_prefix=site_inbox_prefix(site),
            error_cb=remember,
            name="aivos-doctor",
        )

    try:
        return await asyncio.wait_for(attempt(), timeout=4 * _TIMEOUT_S)
    except Exception as exc:
        cause = errors[-1] if errors else exc
        raise _Unreachable(str(cause) or type(cause).__name__) from exc


async def _probe(url: str, site: str) -> str:
    """Connect, round-trip a PING, and return the server's version."""
    nc = await connect(url, site)
    try:
        await nc.flush(timeout=_TIMEOUT_S)
        v = nc.connected_server_version
        return f"{v.major}.{v.minor}.{v.patch}"
    finally:
        await nc.close()


def check_nats(box: Box) -> list[Finding]:
    url = box.settings.uplink.nats_url
    if not url:
        return [ok("nats", "no uplink configured: a standalone box (local answers only, no sync)")]
    out: list[Finding] = []
    try:
        version = asyncio.run(_probe(url, box.settings.site_id))
    except Exception as exc:  # nats-py raises its own errors, OSError and TimeoutError
        reason = str(exc) or type(exc).__name__
        out.append(
            fail("nats", f"cannot connect to {url} ({reason}): is the site's leaf node running?")
        )
    else:
        out.append(ok("nats", f"connected to {url} (nats-server {version})", url=url))
    out.extend(_hub_reachable(box))
    return out


def _hub_reachable(box: Box) -> list[Finding]:
    """A TCP connection to each hub leaf URL the kit's leaf.conf dials."""
    if box.kit is None:
        return []
    urls = _REMOTE_URL.findall((box.kit / "leaf.conf").read_text(errors="replace"))
    if not urls:
        return [warn("nats", f"{box.kit / 'leaf.conf'} names no hub URL")]
    errors = []
    for url in urls:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 7422
        try:
            with socket.create_connection((host, port), timeout=_TIMEOUT_S):
                return [ok("nats", f"the hub's leaf port {host}:{port} accepts connections")]
        except OSError as exc:
            errors.append(f"{host}:{port} ({exc.strerror or exc})")
    return [
        fail(
            "nats",
            f"the hub cannot be reached from this box: {', '.join(errors)}; "
            "check the WAN link, DNS and firewall (local answers go on, sync waits)",
        )
    ]


def check_certificates(box: Box) -> list[Finding]:
    if box.kit is None:
        return [ok("certificates", "no site kit (not enrolled): no certificates to check")]
    from cryptography import x509

    files = sorted((box.kit / "credentials").glob("*.crt"))
    if not files:
        return [fail("certificates", f"the site kit {box.kit} has no certificates")]
    now = datetime.now(UTC)
    out: list[Finding] = []
    for path in files:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        end, start = cert.not_valid_after_utc, cert.not_valid_before_utc
        days = (end - now).total_seconds() / 86400
        detail = {"file": str(path), "expires": end.isoformat(), "days_left": round(days, 1)}
        name = path.name
        if now < start:
            said = f"{name} is not valid before {start:%Y-%m-%d}: is the clock right?"
            out.append(fail("certificates", said, **detail))
        elif days < 0:
            said = f"{name} expired on {end:%Y-%m-%d}: rotate the site's credentials"
            out.append(fail("certificates", said + " (`aivos fleet rotate`)", **detail))
        elif days < WARN_DAYS:
            said = f"{name} expires in {days:.0f} days ({end:%Y-%m-%d}): rotate it soon"
            out.append(warn("certificates", said, **detail))
        else:
            out.append(ok("certificates", f"{name} valid for {days:.0f} more days", **detail))
    out.extend(_key_modes(box.kit / "credentials"))
    return out


def _key_modes(directory: Path) -> list[Finding]:
    loose = [p.name for p in sorted(directory.glob("*.key")) if p.stat().st_mode & 0o077]
    if loose:
        return [
            fail(
                "certificates",
                f"private keys readable by other users: {', '.join(loose)} (chmod 600 them)",
            )
        ]
    return []
