"""`aivos approvals list|approve|reject`: the workflow runs waiting for an operator's decision,
over the edge agent's HTTP API (``GET /v1/runs?state=waiting_approval``, the run's timeline
for the approval message, ``POST /v1/runs/{id}/approve|reject``).

The URL and token come from the options, else ``$AIVOS_URL`` / ``$AIVOS_TOKEN``, else the
appliance `aivos up` runs (its URL, and the edge operator token it keeps). Deciding needs
an ``operator`` token; a client token lists only the runs of its own requests."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx
from rich.console import Console
from rich.table import Table

from aivos.edge.client_cli import session_file
from aivos.shared.cli_options import json_option
from aivos.shared.paths import aivos_home

__all__ = ["list_cmd", "approve_cmd", "reject_cmd", "pending_approvals"]

_PAGE = 200  # runs per request while listing (the API's pages end at `next_before`)
_PAST = {"approve": "approved", "reject": "rejected"}

F = TypeVar("F", bound=Callable[..., Any])


def _up_operator_token() -> str | None:
    """The edge operator token `aivos up` keeps for its appliance (None when not there)."""
    try:
        path = aivos_home() / "appliance" / "edge" / "up-operator-token"
        return path.read_text().strip() or None
    except OSError:
        return None


def _up_url() -> str | None:
    try:
        with open(session_file(), encoding="utf-8") as fh:
            return str(json.load(fh)["edge"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _edge_options(fn: F) -> F:
    fn = click.option(
        "--timeout", type=float, default=30.0, show_default=True, help="Seconds per request."
    )(fn)
    fn = click.option(
        "--token",
        default=None,
        help="Operator token (default: $AIVOS_TOKEN, else the running `aivos up`'s).",
    )(fn)
    fn = click.option(
        "--url",
        default=None,
        help="Edge agent URL (default: $AIVOS_URL, else the running `aivos up`).",
    )(fn)
    return fn


class _Edge:
    """The edge API as this command uses it: errors become readable `ClickException`s."""

    def __init__(self, url: str | None, token: str | None, timeout: float) -> None:
        self.url = (
            url or os.environ.get("AIVOS_URL") or _up_url() or "http://127.0.0.1:8080"
        ).rstrip("/")
        token = token or os.environ.get("AIVOS_TOKEN") or _up_operator_token()
        if not token:
            raise click.ClickException(
                "no token: pass --token (an operator token), set AIVOS_TOKEN, "
                "or start the appliance with `aivos up`"
            )
        self._client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach the edge agent at {self.url}: {exc}") from exc
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            message = err.get("message") or resp.text[:200]
            raise click.ClickException(f"{resp.status_code} {err.get('code', '')}: {message}")
        return data

    def close(self) -> None:
        self._client.close()


def _waiting_step(detail: dict[str, Any]) -> dict[str, Any]:
    """The approve step the run waits on (its message and review), from the run timeline."""
    for step in reversed(detail.get("steps", [])):
        if step.get("kind") == "approve" and step.get("state") == "waiting":
            return dict(step)
    return {}


def pending_approvals(edge: _Edge) -> list[dict[str, Any]]:
    """Every run waiting for approval, oldest first, with what the operator is asked."""
    runs: list[dict[str, Any]] = []
    before: str | None = None
    while True:
        params: dict[str, Any] = {"state": "waiting_approval", "limit": _PAGE}
        if before:
            params["before"] = before
        page = edge.call("GET", "/v1/runs", params=params)
        runs.extend(page["runs"])
        before = page.get("next_before")
        if not before:
            break
    pending = []
    for run in runs:
        step = _waiting_step(edge.call("GET", f"/v1/runs/{run['run_id']}"))
        asked = step.get("input") or {}
        pending.append(
            {
                "run_id": run["run_id"],
                "workflow": run["workflow"],
                "waiting_since": step.get("started_at") or run["updated_at"],
                "step": step.get("step"),
                "message": asked.get("message"),
                "review": asked.get("review") or {},
                # the step's default decision applies at this time (Unix seconds)
                "decide_by": (step.get("approval") or {}).get("wait_until"),
            }
        )
    pending.sort(key=lambda p: str(p["waiting_since"]))
    return pending


@click.command("list")
@_edge_options
@json_option("Print the pending approvals as a JSON list.")
def list_cmd(url: str | None, token: str | None, timeout: float, as_json: bool) -> None:
    """List workflow runs waiting for an operator's approval, oldest first."""
    edge = _Edge(url, token, timeout)
    try:
        pending = pending_approvals(edge)
    finally:
        edge.close()
    if as_json:
        sys.stdout.write(json.dumps(pending, indent=2) + "\n")
        return
    console = Console()
    if not pending:
        console.print("no runs are waiting for approval")
        return
    table = Table(title=f"{len(pending)} waiting for approval")
    # run ids are copied into `approve`/`reject`: never wrapped
    table.add_column("run", no_wrap=True, min_width=26)
    table.add_column("workflow", overflow="fold")
    table.add_column("waiting since (UTC)", no_wrap=True)
    table.add_column("asks", overflow="fold", min_width=20)
    for p in pending:
        asks = p["message"] or ""
        for ref, value in p["review"].items():
            asks += f"\n[dim]{ref}:[/dim] {value}"
        since = str(p["waiting_since"])[:19].replace("T", " ")
        table.add_row(p["run_id"], p["workflow"], since, asks)
    console.print(table)
    console.print("[dim]decide with: aivos approvals approve|reject RUN_ID [--note TEXT][/dim]")


def _decide(action: str) -> click.Command:
    @click.command(action)
    @click.argument("run_id")
    @click.option("--note", default=None, help="Why (kept in the run's timeline and the audit).")
    @_edge_options
    @json_option("Print the API's JSON response.")
    def command(
        run_id: str,
        note: str | None,
        url: str | None,
        token: str | None,
        timeout: float,
        as_json: bool,
    ) -> None:
        edge = _Edge(url, token, timeout)
        try:
            body = {"note": note} if note else None
            result = edge.call("POST", f"/v1/runs/{run_id}/{action}", json=body)
        finally:
            edge.close()
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
            return
        # the decision is recorded; the run carries on by itself (its state may still read
        # waiting_approval for a moment), so the final state is shown only once it is final
        line = f"{_PAST[action]} run {result['run_id']} ({result['workflow']})"
        if result.get("done"):
            line += f": {result['state']}"
        Console().print(line, highlight=False)

    command.help = f"{action.capitalize()} a run waiting for approval (needs an operator token)."
    return command


approve_cmd = _decide("approve")
reject_cmd = _decide("reject")
