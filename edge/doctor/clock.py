"""The clock check: how far this box's clock is from the hub's.

What the box can honestly read the hub's time from, with what it already has: the hub's
JetStream answers a stream-info request with its own clock (``ts``, nanoseconds, nats-server
2.10+), and a site may already ask for the info of the config bucket's and the model
store's streams (`shared.natsconf.permissions`). No new service, no new permission. (The
leaf's ``/varz`` shows the leaf's clock, which is this box's own; NATS INFO has no time;
``$SYS`` requests need system-account credentials a site never has.)

One reading: the box's clock at send (t0) and at reply (t1), the hub's ``ts`` in between,
so ``skew = ts - (t0 + t1) / 2`` within ``± rtt / 2``. The best of a few readings (the
smallest round trip) is kept, as NTP does.

Why the thresholds:

* generation requests carry an absolute deadline stamped by this box's clock
  (``deadline_unix_ms``) that the cloud's workers check with theirs: a box behind the hub
  by S seconds loses S of every escalation's budget (8 s by default), and at the budget
  every escalation arrives already expired;
* audit, outbox and heartbeat timestamps are the box's: the cloud orders, ages and
  reports them next to its own;
* certificates are issued valid from 5 minutes before signing (`shared.natsconf.pki`): a
  box behind by more refuses a freshly rotated certificate as not yet valid, and one
  ahead sees certificates expire early; an unsynchronised clock drifts seconds a day.

A synchronised clock (chrony, systemd-timesyncd) is within milliseconds of the hub's, so
`WARN_S` means no time sync is running and `FAIL_S` means deadlines already suffer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

import msgspec

from aivos.edge.doctor.box import Box, Finding, fail, ok, warn
from aivos.edge.doctor.link import connect
from aivos.shared.subjects import CONFIG_BUCKET, HUB_DOMAIN, MODELS_BUCKET

__all__ = ["check_clock", "read_hub_clock", "HubClock", "NoHubClock", "WARN_S", "FAIL_S"]

WARN_S = 1.0
FAIL_S = 5.0
READINGS = 3
# streams the hub's fleet service creates and every site may read the info of
PROBES = tuple(
    f"$JS.{HUB_DOMAIN}.API.STREAM.INFO.{stream}"
    for stream in (f"KV_{CONFIG_BUCKET}", f"OBJ_{MODELS_BUCKET}")
)

Clock = Callable[[], float]  # seconds since the epoch, like time.time


class HubClock(msgspec.Struct, frozen=True):
    skew_s: float  # hub - box: positive when this box's clock is behind
    rtt_s: float  # the round trip of the reading kept; the skew is good to ± rtt_s / 2
    subject: str


class NoHubClock(Exception):
    """No reading: the hub did not answer, or has neither stream to ask about."""


class _Info(msgspec.Struct):
    ts: datetime | None = None
    error: dict[str, object] | None = None


_decode = msgspec.json.Decoder(_Info).decode


async def read_hub_clock(url: str, site: str, clock: Clock = time.time) -> HubClock:
    nc = await connect(url, site)
    try:
        reasons: list[str] = []
        for subject in PROBES:
            best: HubClock | None = None
            for _ in range(READINGS):
                t0 = clock()
                try:
                    msg = await nc.request(subject, b"", timeout=3)
                except Exception as exc:  # nats-py: NoRespondersError, TimeoutError
                    raise NoHubClock(f"the hub did not answer ({type(exc).__name__})") from exc
                t1 = clock()
                info = _decode(msg.data)
                if info.ts is None:
                    reasons.append(str((info.error or {}).get("description", "no time")))
                    break
                reading = HubClock(
                    skew_s=info.ts.timestamp() - (t0 + t1) / 2, rtt_s=t1 - t0, subject=subject
                )
                if best is None or reading.rtt_s < best.rtt_s:
                    best = reading
            if best is not None:
                return best
        raise NoHubClock(f"the hub's JetStream says {'; '.join(reasons)}")
    finally:
        await nc.close()


def check_clock(box: Box, clock: Clock = time.time) -> list[Finding]:
    """`clock` is this box's clock (injectable, so a test can skew it)."""
    url = box.settings.uplink.nats_url
    if not url:
        return [ok("clock", "no uplink configured: no hub to compare the clock with")]
    try:
        hub = asyncio.run(read_hub_clock(url, box.settings.site_id, clock))
    except NoHubClock as exc:
        said = f"not compared with the hub's: {exc}; is the fleet service set up on the hub?"
        return [warn("clock", said)]
    except Exception as exc:  # the nats check reports the connection itself
        return [warn("clock", f"not compared with the hub's: cannot connect to {url} ({exc})")]
    skew, bound = hub.skew_s, hub.rtt_s / 2
    side = "behind" if skew > 0 else "ahead of"
    said = f"{abs(skew):.3f} s {side} the hub's (± {bound:.3f} s)"
    detail = {"skew_s": round(skew, 6), "rtt_s": round(hub.rtt_s, 6)}
    least = abs(skew) - bound  # the smallest skew this reading is consistent with
    fix = "synchronise it (chrony or systemd-timesyncd, against the same source as the hub)"
    if least >= FAIL_S:
        why = "generation deadlines, audit times and certificate validity go wrong"
        return [fail("clock", f"this box's clock is {said}: {why}; {fix}", **detail)]
    if least >= WARN_S:
        return [warn("clock", f"this box's clock is {said}: no time sync running? {fix}", **detail)]
    if bound >= WARN_S:
        said = f"the round trip to the hub ({hub.rtt_s:.1f} s) is too slow to tell: {said}"
        return [warn("clock", said, **detail)]
    return [ok("clock", f"this box's clock is {said}", **detail)]
