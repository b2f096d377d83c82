"""`aivos backup` of a data dir with 1 M audit rows while a real agent serves 200 req/s.

1. Creates a data dir with `--rows` audit rows through the store's own append path
   (`edge.store.audit.append`, the function the agent's writer calls: same hash chain, same
   chain head), in transactions of 50,000 rows, and a client token; the example knowledge
   base is added with `aivos kb add`, so the backup has an index too. Creation is timed.
2. Starts `aivos edge serve` on it and offers a paced `--rate` of `POST /v1/infer` (the
   wrk2 method: latency from each request's *scheduled* time, so a stall is charged to
   every request it delayed) for `--window` seconds after a warm-up.
3. At `--backup-at` seconds into the window runs `aivos backup --data-dir D --out FILE`
   as a separate process, as an operator would, and times it; then, `--tail` seconds after
   it ended, again under `nice -n 10` (`--nice 0,10`: one backup per niceness, in turn).
   The load goes on until the window ends and at least `--tail` s after the last backup.
4. Splits the recorded requests by scheduled time: *control* = outside every backup (and
   the second after each), *during* = scheduled while a backup ran. Reports p50/p99 of
   each and their ratio, non-2xx statuses and connection errors.
5. Stops the agent, restores the archive with `aivos restore` into a new dir and runs
   `aivos audit verify` there (and on the source), timing both.

    nice -n 5 python benchmarks/backup_under_load.py [--rows 1000000] [--rate 200] \
        [--window 60] [--backup-at 20] [--nice 0,10] [--bundle DIR] [--gzip] \
        [--work DIR (kept; a second run reuses its rows)] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent
_AIVOS = ["aivos"] if shutil.which("aivos") else [sys.executable, "-m", "aivos"]
_TXN_ROWS = 50_000
_QUERIES = [
    "what is my balance",
    "freeze my account please, my card was stolen",
    "book a flight to lisbon next friday",
    "transfer 200 to my savings account",
    "what's the weather like tomorrow",
    "set an alarm for 6 am",
    "translate good morning into french",
    "reserve a table for two at 8 tonight",
    "how much money do I have left",
    "I lost my card, block it",
    "what are your opening hours",
    "tell me a joke about penguins",
]


# -- 1. the data dir ---------------------------------------------------------------------
def create_rows(data: Path, rows: int) -> dict[str, float]:
    """`rows` audit rows through `audit.append` (the agent's own path), in big transactions."""
    from aivos.edge.store import audit
    from aivos.edge.store.audit import AuditRecord
    from aivos.edge.store.db import db_path, open_writer
    from aivos.edge.store.migrations import apply

    data.mkdir(parents=True, exist_ok=True)
    conn = open_writer(db_path(data))
    apply(conn)
    intents = ("balance", "transfer", "freeze_account", "weather", "oos")
    t0 = time.perf_counter()
    done = 0
    while done < rows:
        conn.execute("BEGIN IMMEDIATE")
        for i in range(done, min(rows, done + _TXN_ROWS)):
            audit.append(
                conn,
                AuditRecord(
                    id=f"bulk-{i:08d}",
                    intent=intents[i % len(intents)],
                    confidence=0.5 + (i % 50) / 100,
                    decision="local",
                    model_version="bench",
                    latency_ms=1.0 + (i % 7) / 10,
                    pii_counts={"EMAIL": 1} if i % 3 == 0 else {},
                    trace_id=f"{i:032x}",
                    detail={"route": "intent"},
                ),
            )
        conn.execute("COMMIT")
        done = min(rows, done + _TXN_ROWS)
        if done % 200_000 == 0 or done == rows:
            rate = done / (time.perf_counter() - t0)
            print(f"  audit rows: {done:,}/{rows:,} ({rate:,.0f} rows/s)", flush=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    seconds = time.perf_counter() - t0
    return {"create_s": round(seconds, 1), "create_rows_per_s": round(rows / seconds)}


def _aivos(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_AIVOS, *args], capture_output=True, text=True, env=env, cwd=_ROOT, check=False
    )


def _checked(*args: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    """(stdout, seconds) of a command that must succeed."""
    t0 = time.perf_counter()
    done = _aivos(*args, env=env)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"aivos {' '.join(args)}: {done.returncode}\n{done.stdout}{done.stderr}")
    return done.stdout, elapsed


# -- 2. the agent --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _agent(data: Path, bundle: list[str], env: dict[str, str], log: Path) -> Iterator[str]:
    port = _free_port()
    cmd = [*_AIVOS, "edge", "serve", "--data-dir", str(data), *bundle, "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=_ROOT)
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"agent exited with {proc.returncode}; see {log}")
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp,
                ):
                    if resp.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("agent not ready after 300 s")
                time.sleep(0.2)
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- 3. paced load, every request kept with its scheduled time ----------------------------
class _Load:
    def __init__(self) -> None:
        self.stop = False
        self.samples: list[tuple[float, float, int]] = []  # (scheduled, latency ms, status)
        self.errors: dict[str, int] = {}


async def _read_status(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status, length, close = int(head[0].split(" ", 2)[1]), 0, False
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "connection" and value.strip().lower() == "close":
            close = True
    await reader.readexactly(length)
    return status, close


async def _conn(url: str, requests: list[bytes], st: _Load, interval: float, due: float) -> None:
    parts = urlsplit(url)
    reader = writer = None
    k = 0
    while not st.stop:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            except OSError as exc:
                st.errors[type(exc).__name__] = st.errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.1)
                continue
        assert reader is not None
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        scheduled, due = due, due + interval
        k += 1
        try:
            writer.write(requests[k % len(requests)])
            status, close = await _read_status(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            st.errors[type(exc).__name__] = st.errors.get(type(exc).__name__, 0) + 1
            writer.close()
            writer = None
            continue
        st.samples.append((scheduled, (time.perf_counter() - scheduled) * 1000, status))
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


def _requests(url: str, token: str) -> list[bytes]:
    parts = urlsplit(url)
    out = []
    for text in _QUERIES:
        body = json.dumps({"text": text}).encode()
        head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _run_backup(args: list[str], niceness: int) -> tuple[float, float, str]:
    prefix = ["nice", "-n", str(niceness)] if niceness else []
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        *_AIVOS,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    t1 = time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError(f"aivos backup failed ({proc.returncode}):\n{out.decode()}")
    return t0, t1, out.decode()


async def drive(
    url: str, token: str, args: argparse.Namespace, archive: Path
) -> tuple[dict[str, object], list[Path]]:
    """Paced load over the window; the backups (one per nice level) one after the other."""
    st = _Load()
    requests = _requests(url, token)
    interval = args.connections / args.rate
    start = time.perf_counter() + 0.2
    tasks = [
        asyncio.create_task(_conn(url, requests, st, interval, start + i / args.rate))
        for i in range(args.connections)
    ]
    w0 = start + args.warmup
    await asyncio.sleep(w0 + args.backup_at - time.perf_counter())
    backups, archives = [], []
    for i, niceness in enumerate(args.nice):
        out = archive.with_name(f"{i}-{archive.name}")
        b0, b1, said = await _run_backup(
            ["backup", "--data-dir", str(args.data), "--out", str(out)], niceness
        )
        backups.append((niceness, b0, b1, said))
        archives.append(out)
        await asyncio.sleep(args.tail)
    w1 = max(w0 + args.window, time.perf_counter())
    await asyncio.sleep(max(0.0, w1 - time.perf_counter()))
    st.stop = True
    await asyncio.wait(tasks, timeout=15)
    for task in tasks:
        task.cancel()
    return _split(st, w0, w1, backups), archives


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


def _stats(samples: list[tuple[float, float, int]], seconds: float) -> dict[str, object]:
    ok = [ms for _, ms, status in samples if 200 <= status < 300]
    statuses: dict[str, int] = {}
    for _, _, status in samples:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "requests": len(samples),
        "seconds": round(seconds, 1),
        "achieved_rps": round(len(samples) / max(seconds, 1e-9), 1),
        "p50_ms": _pct(ok, 0.50),
        "p90_ms": _pct(ok, 0.90),
        "p99_ms": _pct(ok, 0.99),
        "max_ms": round(max(ok), 1) if ok else None,
        "statuses": statuses,
    }


def _split(
    st: _Load, w0: float, w1: float, backups: list[tuple[int, float, float, str]]
) -> dict[str, object]:
    """Control = scheduled outside every backup (and its first second after); one entry per
    backup with the requests scheduled while it ran, and their ratio to the control."""
    recorded = [s for s in st.samples if w0 <= s[0] < w1]
    busy = [(b0, b1 + 1.0) for _, b0, b1, _ in backups]
    control = [s for s in recorded if not any(a <= s[0] < b for a, b in busy)]
    first = backups[0][1]
    c = _stats(control, (w1 - w0) - sum(b - a for a, b in busy))
    runs = []
    for niceness, b0, b1, said in backups:
        d = _stats([s for s in recorded if b0 <= s[0] < b1], b1 - b0)
        runs.append(
            {
                "nice": niceness,
                "backup_s": round(b1 - b0, 2),
                "started_at_s": round(b0 - w0, 1),
                "output": said.strip().splitlines(),
                "during_backup": d,
                **{
                    f"{q}_during_over_control": round(float(d[q]) / float(c[q]), 2)  # type: ignore[arg-type]
                    for q in ("p50_ms", "p99_ms")
                },
            }
        )
    return {
        "window_s": round(w1 - w0, 1),
        "control": c,
        "control_before_first_backup": _stats([s for s in recorded if s[0] < first], first - w0),
        "backups": runs,
        "connection_errors": st.errors,
    }


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=200.0, help="offered requests/s")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--window", type=float, default=60.0, help="recorded seconds (at least)")
    ap.add_argument("--backup-at", type=float, default=20.0, help="seconds into the window")
    ap.add_argument("--tail", type=float, default=10.0, help="seconds after each backup")
    ap.add_argument(
        "--nice",
        default="0,10",
        help="one backup per value, in turn: the niceness it runs with (0 = as the agent)",
    )
    ap.add_argument("--bundle", type=Path, default=None, help="default: the built-in bundle")
    ap.add_argument("--kb", type=Path, default=_ROOT / "docs" / "examples" / "kb")
    ap.add_argument("--gzip", action="store_true", help="write a .tar.gz (default: .tar)")
    ap.add_argument("--work", type=Path, default=None, help="default: a temporary dir")
    ap.add_argument(
        "--out", type=Path, default=_ROOT / "benchmarks" / "results" / "backup_under_load.json"
    )
    args = ap.parse_args()
    args.nice = [int(n) for n in args.nice.split(",")]

    env = dict(os.environ)
    env.setdefault("AIVOS_LIMITS__RATE_PER_SECOND", "100000")  # measure serving, not the limiter
    env.setdefault("AIVOS_LIMITS__RATE_BURST", "100000")
    bundle = ["--bundle", str(args.bundle)] if args.bundle else []
    work = args.work or Path(tempfile.mkdtemp(prefix="aivos-backup-bench-"))
    data, restored = work / "edge", work / "restored"
    args.data = data
    archive = work / ("backup.tar.gz" if args.gzip else "backup.tar")
    result: dict[str, object] = {"rows": args.rows, "offered_rps": args.rate}
    try:
        if (data / "aivos.db").is_file():  # --work DIR of an earlier run: reuse its rows
            print(f"reusing {data}", flush=True)
            result["create_s"] = None
        else:
            print(f"creating {args.rows:,} audit rows in {data}", flush=True)
            result |= create_rows(data, args.rows)
        said, _ = _checked("tokens", "create", "--data-dir", str(data), "--scope", "client")
        token = said.strip().splitlines()[-1].strip()
        _checked("kb", "add", "--data-dir", str(data), *bundle, str(args.kb), env=env)
        result["db_bytes"] = (data / "aivos.db").stat().st_size

        print(f"serving {args.rate:.0f} req/s; backups at +{args.backup_at:.0f} s", flush=True)
        with _agent(data, bundle, env, work / "agent.log") as base:
            result["serving"], archives = asyncio.run(
                drive(f"{base}/v1/infer", token, args, archive)
            )
        result["backup_bytes"] = archives[0].stat().st_size

        shutil.rmtree(restored, ignore_errors=True)
        _, result["restore_s"] = _checked("restore", "--data-dir", str(restored), str(archives[0]))
        said, result["verify_restored_s"] = _checked("audit", "verify", "--data-dir", str(restored))
        result["verify_restored"] = said.strip().splitlines()[-1]
        said, _ = _checked("audit", "verify", "--data-dir", str(data))
        result["verify_source"] = said.strip().splitlines()[-1]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for key in ("restore_s", "verify_restored_s"):
        result[key] = round(float(result[key]), 1)  # type: ignore[arg-type]
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "note": "agent, load generator and backup share all cores with other work",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
