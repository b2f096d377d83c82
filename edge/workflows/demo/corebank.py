"""A small fake "core banking" HTTP service for the support-workflow demo and the tests.

    python -m aivos.edge.workflows.demo.corebank --port 8099 --token demo-corebank-token

Endpoints (JSON; `Authorization: Bearer <token>` required when a token is set):

    GET  /accounts/{id}/transactions   recent transactions (with a duplicated card charge)
    GET  /accounts/{id}/billing-check  {"duplicate_charge": bool, "disputable_amount": float}
    POST /disputes                     open a dispute; needs `Idempotency-Key`; a repeated key
                                       returns the first dispute (`"replayed": true`)
    POST /notifications                record a notification (same idempotency rules)
    POST /_control/faults              {"method","prefix","fail","status","delay_s","delay_after_s"}
    GET  /_control/ledger              side effects received, by idempotency key

In-process (tests): `CoreBank(token=...).start()`, `.inject(...)`, `.side_effects`,
`.requests`, `.stop()`. Unknown accounts answer 404 (a non-retryable failure).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CoreBank", "Fault", "DEFAULT_ACCOUNTS", "main"]

DEFAULT_ACCOUNTS: dict[str, float] = {"ACC-1001": 42.50, "ACC-2002": 250.00, "ACC-3003": 0.0}


@dataclass
class Fault:
    method: str
    prefix: str
    fail: int = 0  # answer `status` to this many matching requests
    status: int = 503
    delay_s: float = 0.0  # before handling (a slow or hanging system)
    delay_after_s: float = 0.0  # after recording a side effect, before answering
    times: int = 1_000_000  # how many requests the delays apply to


@dataclass
class _Ledger:
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: dict[str, dict[str, Any]] = field(default_factory=dict)
    side_effects: list[tuple[str, str]] = field(default_factory=list)  # (kind, key), once per key
    requests: list[dict[str, Any]] = field(default_factory=list)


class CoreBank:
    def __init__(
        self, *, token: str | None = None, accounts: dict[str, float] | None = None
    ) -> None:
        self.token = token
        self.accounts = dict(DEFAULT_ACCOUNTS if accounts is None else accounts)
        self.faults: list[Fault] = []
        self.ledger = _Ledger()
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- in-process control ----------------------------------------------------------------
    def inject(self, method: str, prefix: str, **kwargs: Any) -> Fault:
        fault = Fault(method.upper(), prefix, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    @property
    def side_effects(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.ledger.side_effects)

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.ledger.requests)

    def count(self, method: str, prefix: str) -> int:
        return sum(
            1 for r in self.requests if r["method"] == method and r["path"].startswith(prefix)
        )

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> CoreBank:
        bank = self

        class Handler(_Handler):
            pass

        Handler.bank = bank
        self._server = _Server((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> CoreBank:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- request handling ------------------------------------------------------------------
    def _fault_for(self, method: str, path: str) -> tuple[int | None, float, float]:
        with self.lock:
            status: int | None = None
            delay = after = 0.0
            for f in self.faults:
                if f.method != method or not path.startswith(f.prefix):
                    continue
                if f.fail > 0 and status is None:
                    f.fail -= 1
                    status = f.status
                if f.times > 0 and (f.delay_s or f.delay_after_s):
                    f.times -= 1
                    delay, after = max(delay, f.delay_s), max(after, f.delay_after_s)
            return status, delay, after

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, Any, float]:
        """(status, JSON body, seconds to wait before answering)."""
        key = headers.get("idempotency-key")
        with self.lock:
            self.ledger.requests.append({"method": method, "path": path, "key": key})
        if path.startswith("/_control/"):
            return self._control(method, path, body)
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "unauthorized"}, 0.0
        status, delay, after = self._fault_for(method, path)
        if delay:
            time.sleep(delay)
        if status is not None:
            return status, {"error": "injected failure"}, 0.0
        parts = [p for p in path.split("?")[0].split("/") if p]
        if method == "GET" and len(parts) == 3 and parts[0] == "accounts":
            account = parts[1]
            if account not in self.accounts:
                return 404, {"error": "unknown account"}, 0.0
            amount = self.accounts[account]
            if parts[2] == "transactions":
                txs = [
                    {"date": "2026-11-02", "merchant": "Grocer", "amount": 23.10},
                    {"date": "2026-11-03", "merchant": "Card purchase", "amount": amount},
                ]
                if amount > 0:
                    txs.append(
                        {"date": "2026-11-03", "merchant": "Card purchase", "amount": amount}
                    )
                return 200, {"account_id": account, "transactions": txs}, 0.0
            if parts[2] == "billing-check":
                return (
                    200,
                    {
                        "account_id": account,
                        "duplicate_charge": amount > 0,
                        "disputable_amount": amount,
                    },
                    0.0,
                )
        if method == "POST" and parts in (["disputes"], ["notifications"]):
            if not key:
                return 400, {"error": "Idempotency-Key header required"}, 0.0
            table = self.ledger.disputes if parts[0] == "disputes" else self.ledger.notifications
            with self.lock:
                if key in table:
                    return 200, {**table[key], "replayed": True}, after
                record = {
                    "id": f"{parts[0][:3].upper()}-{len(table) + 1:05d}",
                    "status": "opened",
                    "request": body,
                }
                table[key] = record
                self.ledger.side_effects.append((parts[0], key))
            return 201, {**record, "replayed": False}, after
        return 404, {"error": "no such endpoint"}, 0.0

    def _control(self, method: str, path: str, body: Any) -> tuple[int, Any, float]:
        if method == "POST" and path == "/_control/faults" and isinstance(body, dict):
            self.inject(str(body.pop("method", "GET")), str(body.pop("prefix", "/")), **body)
            return 200, {"ok": True}, 0.0
        if method == "GET" and path == "/_control/ledger":
            with self.lock:
                return (
                    200,
                    {
                        "side_effects": [list(x) for x in self.ledger.side_effects],
                        "disputes": self.ledger.disputes,
                    },
                    0.0,
                )
        return 404, {"error": "no such control endpoint"}, 0.0


class _Server(ThreadingHTTPServer):
    request_queue_size = 2048  # many concurrent runs connect at once (benchmarks)
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    bank: CoreBank
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024  # headers + body leave in one write (no Nagle/delayed-ACK stall)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload, wait = self.bank.handle(self.command, self.path, headers, body)
        if wait:
            time.sleep(wait)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake core-banking service for the aivos demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--token", default="demo-corebank-token")
    args = parser.parse_args(argv)
    bank = CoreBank(token=args.token or None).start(args.host, args.port)
    print(f"corebank listening on {bank.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        bank.stop()


if __name__ == "__main__":
    main()
