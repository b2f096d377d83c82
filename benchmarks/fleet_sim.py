"""Fleet simulator: N simulated sites publishing real heartbeats (and audit records) over NATS.

Run:  python benchmarks/fleet_sim.py --nats URL [--sites 1000] [--interval 10]
                                     [--duration 60] [--audit-every 5] [--watch-config 0]

Every site is a `cloud.fleet.sim.SimSite` (the fleet protocol as the edge speaks it): its
heartbeats go to ``aivos.hb.<site>`` every ``--interval`` seconds, their start staggered
evenly over one interval (as a real fleet's clocks are); the heartbeats due are sent in one
burst per wake-up, and every scheduled one is sent (late, if this process is starved of CPU:
``max_behind_schedule_s`` says by how much). Every ``--audit-every`` heartbeats
a site also syncs one audit record (masked, like an edge's outbox) to the hub stream
``AIVOS_SYNC``. The first ``--watch-config`` sites also watch their desired config in KV
and answer config changes and bundle rollouts. Bounded: it stops after ``--duration``
seconds of schedule (or ``--max-heartbeats`` in total, if given), then prints a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.fleet.sim import SimSite  # noqa: E402
from aivos.shared.natsconf.connect import connect_nats  # noqa: E402
from aivos.shared.subjects import HUB_DOMAIN, sync_subject  # noqa: E402
from aivos.shared.syncwire import SyncEnvelope, encode_envelope, ensure_sync_stream, msg_id  # noqa: E402

_INTENTS = ["card_declined", "balance", "transfer", "lost_card", "fees", "oos"]
_DECISIONS = ["local", "local", "local", "escalate", "refuse"]


def _audit(site: str, seq: int, rng: random.Random) -> SyncEnvelope:
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    rid = f"sim-{seq:08d}"
    intent = rng.choice(_INTENTS)
    return SyncEnvelope(
        id=rid,
        site=site,
        data_class="audit",
        kind="decision",
        seq=seq,
        created_at=now,
        payload={
            "seq": seq,
            "id": rid,
            "ts": now,
            "kind": "decision",
            "intent": intent,
            "confidence": round(rng.uniform(0.4, 0.99), 3),
            "decision": rng.choice(_DECISIONS),
            "model_version": "v1",
            "latency_ms": round(rng.uniform(1.5, 9.0), 2),
            "pii_counts": {"PERSON": 1} if rng.random() < 0.2 else {},
            "detail": {},
        },
    )


async def run(args: argparse.Namespace) -> dict[str, object]:
    nc = await connect_nats(args.nats, name="fleet-sim", pending_size=64 * 1024 * 1024)
    js = nc.jetstream(domain=HUB_DOMAIN)
    if args.audit_every:
        await ensure_sync_stream(js, update=False)
    sites = [
        SimSite(nc, f"{args.prefix}-{i:04d}", interval_s=args.interval, seed=i)
        for i in range(args.sites)
    ]
    for s in sites[: args.watch_config]:
        await s.start(heartbeats=False, watch_config=True)
    rng = random.Random(7)
    audit_seq = dict.fromkeys((s.site_id for s in sites), 0)
    pending_acks: list[asyncio.Future[object]] = []
    audit_sent = 0
    started = time.monotonic()
    # the schedule: site i beats at start + i*interval/N + k*interval, for --duration seconds;
    # every scheduled heartbeat is sent, late if this process falls behind (reported)
    scheduled = int(round(args.duration / args.interval * len(sites)))
    if args.max_heartbeats:
        scheduled = min(scheduled, args.max_heartbeats)
    step = args.interval / max(1, len(sites))
    beats = 0
    behind_max = 0.0
    while beats < scheduled:
        now = time.monotonic()
        due_until = min(scheduled, int((now - started) / step) + 1)
        if beats >= due_until:  # sleep until the next one is due
            await asyncio.sleep(started + beats * step - now)
            continue
        behind_max = max(behind_max, now - (started + beats * step))
        for n in range(beats, due_until):  # every heartbeat due by now, in one burst
            site = sites[n % len(sites)]
            await site.beat()
            if args.audit_every and site.sent % args.audit_every == 0:
                audit_seq[site.site_id] += 1
                env = _audit(site.site_id, audit_seq[site.site_id], rng)
                pending_acks.append(
                    await js.publish_async(
                        sync_subject(site.site_id, "audit"),
                        encode_envelope(env),
                        headers={"Nats-Msg-Id": msg_id(site.site_id, env.id)},
                    )
                )
                audit_sent += 1
        beats = due_until
    await nc.flush()
    if pending_acks:
        await asyncio.gather(*pending_acks, return_exceptions=True)
    for s in sites[: args.watch_config]:
        await s.stop()
    await nc.drain()
    elapsed = time.monotonic() - started
    return {
        "sites": len(sites),
        "interval_s": args.interval,
        "heartbeats_sent": beats,
        "audit_records_sent": audit_sent,
        "elapsed_s": round(elapsed, 2),
        "heartbeats_per_s": round(beats / elapsed, 1) if elapsed else 0.0,
        "max_behind_schedule_s": round(behind_max, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nats", default="nats://127.0.0.1:4222")
    p.add_argument("--sites", type=int, default=1000)
    p.add_argument("--interval", type=float, default=10.0, help="heartbeat interval (s)")
    p.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds")
    p.add_argument("--max-heartbeats", type=int, default=0, help="stop after this many (0: no cap)")
    p.add_argument(
        "--audit-every", type=int, default=5, help="one audit record per K beats (0: none)"
    )
    p.add_argument("--watch-config", type=int, default=0, help="sites that answer config/rollouts")
    p.add_argument("--prefix", default="sim")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
