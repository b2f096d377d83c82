"""Fault campaign (issue 12): the edge agent under SIGKILL, a full disk and a flapping uplink,
with mixed client load; nothing acknowledged may be lost.

Run:  python benchmarks/fault_campaign.py [--rounds 200] [--flap-s 180] [--period-s 3]
                                          [--bundle DIR] [--only kill,disk,flap] [--out FILE]

All real: `aivos edge serve` subprocesses (tests/fixtures/agent_proc.py) with a small int8
bundle (built first unless `--bundle`), the load of tests/fixtures/mixed_load.py (plain and
streamed infer, async jobs, knowledge writes, session facts, signed webhook events that
start a workflow; infers of the `balance` intent start it too).

* kill: `--rounds` times, start the agent, let the load run until a random number (1-15)
  of new acknowledgements arrived, SIGKILL. Then one last start: every acknowledged
  request id has its audit row, every acknowledged job, run, fact and document exists,
  no job is left `queued`/`running` and no run `running`, `aivos audit verify` passes.
* disk: the agent's data directory on a 24 MB tmpfs (root only); under load a ballast
  file fills it: writes answer 507 `disk_full` (never 500), streams end with an `error`
  event, /readyz answers 503; the ballast is removed and the same process answers 200
  again; afterwards nothing acknowledged is missing and the audit chain verifies.
* flap: hub + TCP proxy (the WAN) + site leaf + `aivos cloud ingest`; the proxy cuts and
  restores the link every `--period-s` seconds for `--flap-s` seconds under load; then
  the cloud store holds each outbox record of the site exactly once (0 lost, 0 duplicated).

Results: benchmarks/results/fault_campaign.json (figures quoted in docs/faults.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.ingest import CloudStore  # noqa: E402
from aivos.cloud.ingest.consumer import DEFAULT_DURABLE  # noqa: E402
from aivos.shared.natsconf import start_local_hub  # noqa: E402
from aivos.shared.subjects import SYNC_STREAM  # noqa: E402
from tests.fixtures.agent_proc import AgentProcess, aivos_cli, create_token  # noqa: E402
from tests.fixtures.mixed_load import MixedLoad  # noqa: E402
from tests.fixtures.netproxy import TcpProxy  # noqa: E402
from tests.fixtures.wait import eventually_sync  # noqa: E402

__all__ = ["Site", "build_bundle", "kill_campaign", "disk_campaign", "flap_campaign"]

SITE = "faults"
WEBHOOK = ("bank", "statement", "fault-campaign-webhook-secret")
WORKFLOW = """
name = "balance_note"
deadline_s = 30

[trigger]
intents = ["balance"]
events = ["bank.statement"]

[[steps]]
id = "answer"
kind = "respond"
template = "Your balance request is noted."
"""
STUCK_JOBS = ("queued", "running")


def build_bundle(root: Path) -> Path:
    """The small test bundle (8 CLINC150 intents + oos, int8), built with `aivos intents train`."""
    from tests.fixtures.model import run_aivos, write_small_clinc

    data = write_small_clinc(root / "small_clinc.json")
    out = root / "bundle"
    done = run_aivos(
        "intents", "train", "--data", str(data), "--val", f"{data}#val",
        "--out", str(out), "--epochs", "1",
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return out


class Site:
    """One agent's data directory, config (a workflow and a webhook secret) and tokens."""

    def __init__(self, root: Path, bundle: Path, data_dir: Path, env: dict[str, str]) -> None:
        wf = root / "workflows"
        wf.mkdir(parents=True, exist_ok=True)
        (wf / "balance_note.toml").write_text(WORKFLOW)
        secrets = root / "secrets.toml"
        secrets.write_text(f'[webhooks.{WEBHOOK[0]}]\nsecret = "{WEBHOOK[2]}"\n')
        secrets.chmod(0o600)
        config = root / "agent.toml"
        config.write_text(f'[workflows]\ndirectory = "{wf}"\nsecrets_file = "{secrets}"\n')
        self.data_dir = data_dir
        self.tokens = {s: create_token(data_dir, s, f"fc-{s}") for s in ("client", "operator")}
        self.tokens["admin"] = create_token(data_dir, "admin", "fc-admin")
        self.agent = AgentProcess(data_dir, bundle, log=root / "agent.log", config=config, env=env)

    def load(self, seed: int, workers: int = 4, **kw: Any) -> MixedLoad:
        kw.setdefault("webhook", WEBHOOK)
        return MixedLoad(self.agent.url, self.tokens, workers=workers, seed=seed, **kw)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.data_dir / "aivos.db", timeout=30)) as conn:
            return list(conn.execute(sql, args))


def _states(site: Site, table: str, ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        found.update(site.query(f"SELECT id, state FROM {table} WHERE id IN ({marks})", *chunk))
    return dict(found)


def verify(site: Site, load: MixedLoad, *, settle_timeout: float = 120) -> dict[str, Any]:
    """With the agent running: what was acknowledged is all there, nothing is stuck."""
    acked = load.acked
    audited = {row[0] for row in site.query("SELECT id FROM audit")}
    lost_audit = sorted(set(acked.infer) - audited)

    def settled() -> bool:
        jobs = _states(site, "jobs", acked.jobs)
        runs = _states(site, "workflow_runs", acked.runs)
        return not any(s in STUCK_JOBS for s in jobs.values()) and "running" not in runs.values()

    stuck_note = ""
    try:
        eventually_sync(settled, timeout=settle_timeout, what="jobs and runs to settle")
    except AssertionError as exc:
        stuck_note = str(exc)[:300]
    jobs, runs = _states(site, "jobs", acked.jobs), _states(site, "workflow_runs", acked.runs)
    facts = set(site.query("SELECT session_id, key FROM memory_facts"))
    headers = {"Authorization": f"Bearer {site.tokens['admin']}"}
    listed = httpx.get(f"{site.agent.url}/v1/knowledge", headers=headers, timeout=30).json()
    docs = {d["doc_id"] for d in listed}
    return {
        "acknowledged": acked.counts(),
        "lost_audit": lost_audit,
        "lost_jobs": sorted(set(acked.jobs) - set(jobs)),
        "lost_runs": sorted(set(acked.runs) - set(runs)),
        "lost_facts": sorted(f"{s}/{k}" for s, k, _ in acked.facts if (s, k) not in facts),
        "lost_docs": sorted(set(acked.docs) - docs),
        "stuck_jobs": sorted(j for j, s in jobs.items() if s in STUCK_JOBS),
        "stuck_runs": sorted(r for r, s in runs.items() if s == "running"),
        "stuck_note": stuck_note,
        "job_states": _histogram(jobs.values()),
        "run_states": _histogram(runs.values()),
    }


def verify_offline(site: Site) -> dict[str, Any]:
    """With the agent stopped: SQLite integrity and the audit hash chain (`aivos audit verify`)."""
    integrity = site.query("PRAGMA integrity_check")[0][0]
    audit = aivos_cli("audit", "verify", "--data-dir", str(site.data_dir), timeout=600)
    return {
        "integrity_check": integrity,
        "audit_verify_ok": audit.returncode == 0,
        "audit_verify": (audit.stdout + audit.stderr).strip()[-500:],
        "audit_rows": site.query("SELECT count(*) FROM audit")[0][0],
    }


def _histogram(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _server_errors(statuses: dict[str, int]) -> int:
    """Answers 5xx other than 507 (a full disk is a documented refusal, not a crash)."""
    codes = {key: key.split()[-1] for key in statuses}
    return sum(
        n
        for k, n in statuses.items()
        if codes[k].isdigit() and codes[k][0] == "5" and codes[k] != "507"
    )


def _status_total(statuses: dict[str, int], code: str) -> int:
    return sum(n for k, n in statuses.items() if k.split()[-1] == code)


def log_errors(log: Path, limit: int = 10) -> list[str]:
    """Distinct exceptions in the agent log (JSON lines carrying a traceback in `exc`):
    the logger, the message and the traceback's last line, with how often each occurred."""
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"msg": line} if "Traceback" in line else {}
        exc = str(entry.get("exc") or "")
        if not exc and "Traceback" not in str(entry.get("msg", "")):
            continue
        last = exc.strip().splitlines()[-1] if exc.strip() else ""
        key = f"{entry.get('logger', '?')}: {str(entry.get('msg', ''))[:120]} | {last[:200]}"
        counts[key] = counts.get(key, 0) + 1
    return [f"{n}x {key}" for key, n in list(counts.items())[:limit]]


def _progress(load: MixedLoad) -> int:
    return sum(load.acked.counts().values())


def _reached(load: MixedLoad, target: int) -> Callable[[], bool]:
    return lambda: _progress(load) >= target


def kill_campaign(
    root: Path, bundle: Path, rounds: int, *, seed: int = 7, log: Callable[[str], None] = print
) -> dict[str, Any]:
    site = Site(root, bundle, root / "edge", {})
    rng = random.Random(seed)
    load = site.load(seed)
    started = time.monotonic()
    for n in range(rounds):
        site.agent.start()
        before = _progress(load)
        load.start()
        # the kill lands at a random point of the load: after 1-15 new acknowledgements
        eventually_sync(
            _reached(load, before + rng.randint(1, 15)), timeout=120, what="acknowledgements"
        )
        site.agent.kill()
        load.stop()
        if (n + 1) % 10 == 0:
            log(f"kill: {n + 1}/{rounds} rounds, {load.acked.counts()}")
    site.agent.start()
    try:
        result = verify(site, load)
    finally:
        site.agent.stop()
    result.update(verify_offline(site))
    result.update(
        rounds=rounds,
        wall_s=round(time.monotonic() - started, 1),
        statuses=dict(sorted(load.statuses.items())),
        server_errors=_server_errors(load.statuses),
        connection_errors=load.errors,
        log_errors=log_errors(site.agent.log),
    )
    return result


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    ballast = directory / "ballast"
    with open(ballast, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
    with open(ballast, "ab", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 512)  # the last few blocks too
    return ballast


def disk_campaign(
    root: Path, bundle: Path, *, size: str = "24m", seed: int = 11, full_507s: int = 30
) -> dict[str, Any]:
    with tmpfs(root / "fs", size) as fs:
        site = Site(root, bundle, fs / "edge", {"AIVOS_STORE__MIN_FREE_MB": "1"})
        load = site.load(seed, workers=3)
        site.agent.start()
        url = site.agent.url
        try:
            load.start()
            eventually_sync(lambda: len(load.acked.infer) >= 20, timeout=120, what="load")
            ballast = _fill(fs)
            acked_at_full = _progress(load)
            eventually_sync(
                lambda: _status_total(load.statuses, "507") >= full_507s,
                timeout=300,
                what="507 disk_full",
            )
            ready_when_full = _readyz(url)
            during = dict(load.statuses)
            ballast.unlink()  # space returns; the same process must write again
            mark = len(load.acked.infer)
            eventually_sync(
                lambda: len(load.acked.infer) >= mark + 20, timeout=300, what="writes resume"
            )
            eventually_sync(lambda: _readyz(url) == 200, timeout=60, what="ready again")
            load.stop()
            result = verify(site, load)
        finally:
            load.stop()
            site.agent.stop()
        result.update(verify_offline(site))
    result.update(
        tmpfs_size=size,
        acknowledged_before_full=acked_at_full,
        statuses_while_full=during,
        statuses=dict(sorted(load.statuses.items())),
        server_errors=_server_errors(load.statuses),
        log_errors=log_errors(site.agent.log),
        readyz_when_full=ready_when_full,
        readyz_after=200,
        restarted=False,
    )
    return result


def _readyz(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _ensure_stream(url: str) -> None:
    import nats

    from aivos.shared.syncwire import ensure_sync_stream

    async def go() -> None:
        nc = await nats.connect(url)
        try:
            await ensure_sync_stream(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(go())


def _flapper(proxy: TcpProxy, period_s: float, stop: threading.Event, seed: int) -> list[float]:
    rng, cuts = random.Random(seed), []
    while not stop.wait(period_s * rng.uniform(0.5, 1.5)):
        proxy.cut()
        cuts.append(time.monotonic())
        stop.wait(period_s * rng.uniform(0.5, 1.5))
        proxy.restore()
    proxy.restore()
    return cuts


def flap_campaign(
    root: Path, bundle: Path, *, flap_s: float, period_s: float = 3.0, seed: int = 13
) -> dict[str, Any]:
    from tests.fixtures.nats import start_leaf, wait_consumer_settled

    hub = start_local_hub(root / "hub")
    proxy = TcpProxy(0, ("127.0.0.1", hub.conf.leaf_port)).start()  # type: ignore[union-attr]
    leaf = start_leaf(root / "leaf", SITE, f"nats-leaf://{proxy.url_hostport}", ping_interval_s=1)
    _ensure_stream(hub.url)
    cloud_dir = root / "cloud"
    ingest = subprocess.Popen(
        [sys.executable, "-m", "aivos", "cloud", "ingest", "--nats", hub.url,
         "--data-dir", str(cloud_dir)],
        stdout=subprocess.DEVNULL, stderr=(root / "ingest.log").open("wb"),
    )  # fmt: skip
    env = {
        "AIVOS_SITE_ID": SITE,
        "AIVOS_UPLINK__NATS_URL": leaf.url,
        "AIVOS_UPLINK__ESCALATION_BUDGET_MS": "300",
    }
    site = Site(root, bundle, root / "edge", env)
    load = site.load(seed, workers=3)
    stop = threading.Event()
    cuts: list[float] = []
    cloud: CloudStore | None = None
    try:
        site.agent.start()
        load.start()
        flapper = threading.Thread(
            target=lambda: cuts.extend(_flapper(proxy, period_s, stop, seed)), daemon=True
        )
        flapper.start()
        stop.wait(flap_s)
        stop.set()
        flapper.join()
        load.stop()
        cloud = CloudStore.open(cloud_dir)

        def outbox() -> set[str]:
            return {r[0] for r in site.query("SELECT id FROM outbox")}

        def caught_up() -> bool:
            pending = site.query("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0]
            return pending == 0 and len(cloud.records(site=SITE)) >= len(outbox())  # type: ignore[union-attr]

        eventually_sync(caught_up, timeout=300, what="the outbox synced to the cloud")
        asyncio.run(wait_consumer_settled(hub.url, SYNC_STREAM, DEFAULT_DURABLE, 120))
        result = verify(site, load)
        local, records = outbox(), cloud.records(site=SITE)
        ids = [r.id for r in records]
        audit_ids = [r.payload["id"] for r in records if r.data_class == "audit"]
        result.update(
            outbox_records=len(local),
            cloud_records=len(ids),
            cloud_lost=sorted(local - set(ids))[:50],
            cloud_unexpected=sorted(set(ids) - local)[:50],
            cloud_duplicated=len(ids) - len(set(ids)),
            cloud_duplicated_requests=len(audit_ids) - len(set(audit_ids)),
            acked_not_in_cloud=sorted(set(load.acked.infer) - set(audit_ids))[:50],
            redeliveries_absorbed=cloud.duplicates_ignored(),
        )
    finally:
        stop.set()
        load.stop()
        site.agent.stop()
        ingest.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            ingest.wait(10)
        if cloud is not None:
            cloud.close()
        leaf.stop()
        proxy.close()
        hub.stop()
    result.update(verify_offline(site))
    result.update(
        flap_s=flap_s,
        period_s=period_s,
        link_cuts=len(cuts),
        statuses=dict(sorted(load.statuses.items())),
        server_errors=_server_errors(load.statuses),
        log_errors=log_errors(site.agent.log),
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--flap-s", type=float, default=180.0)
    ap.add_argument("--period-s", type=float, default=3.0)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--only", default="kill,disk,flap")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "fault_campaign.json",
    )
    args = ap.parse_args()
    wanted = set(args.only.split(","))
    report: dict[str, Any] = {
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def record(name: str, result: dict[str, Any]) -> None:
        report[name] = result
        print(json.dumps(result, indent=1)[:3000], flush=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after each scenario

    with tempfile.TemporaryDirectory(prefix="aivos-faults-") as tmp:
        root = Path(tmp)
        bundle = args.bundle or build_bundle(root)
        if "disk" in wanted:
            if os.geteuid() != 0:
                record("disk", {"skipped": "mounting a tmpfs needs root"})
            else:
                record("disk", disk_campaign(root / "disk", bundle))
        if "flap" in wanted:
            flap = flap_campaign(root / "flap", bundle, flap_s=args.flap_s, period_s=args.period_s)
            record("flap", flap)
        if "kill" in wanted:
            record("kill", kill_campaign(root / "kill", bundle, args.rounds))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
