"""`aivos ask`: a small client for humans (and scripts, with --json)."""

from __future__ import annotations

import json
import os
import sys

import click
import httpx
from rich.console import Console
from rich.panel import Panel

from aivos.shared.cli_options import json_option
from aivos.shared.paths import aivos_home

__all__ = ["ask_cmd", "session_file"]


def session_file() -> str:
    """Where `aivos up` leaves the URL and client token of the appliance it runs."""
    return str(aivos_home() / "up.json")


def _metadata(pairs: tuple[str, ...]) -> dict[str, str]:
    """`("account=ACC-1", "channel=app")` -> {"account": "ACC-1", "channel": "app"}."""
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="--meta")
        meta[key.strip()] = value
    return meta


def _defaults() -> dict[str, str]:
    try:
        with open(session_file(), encoding="utf-8") as fh:
            data = json.load(fh)
        return {k: str(v) for k, v in data.items()}
    except (OSError, ValueError):
        return {}


@click.command("ask")
@click.argument("text")
@click.option(
    "--url", default=None, help="Edge agent URL (default: $AIVOS_URL, else the running `aivos up`)."
)
@click.option(
    "--token",
    default=None,
    help="Client token (default: $AIVOS_TOKEN, else the running `aivos up`).",
)
@click.option(
    "--session", "session_id", default=None, help="Session id, to keep conversation memory."
)
@click.option(
    "--meta",
    "meta",
    multiple=True,
    metavar="KEY=VALUE",
    help="Request metadata (repeatable), e.g. --meta account_id=ACC-1001.",
)
@json_option("Print the API's JSON response.")
@click.option("--timeout", type=float, default=60.0, show_default=True)
def ask_cmd(
    text: str,
    url: str | None,
    token: str | None,
    session_id: str | None,
    meta: tuple[str, ...],
    as_json: bool,
    timeout: float,
) -> None:
    """Ask the edge agent a question."""
    saved = _defaults()
    url = (
        url or os.environ.get("AIVOS_URL") or saved.get("edge") or "http://127.0.0.1:8080"
    ).rstrip("/")
    token = token or os.environ.get("AIVOS_TOKEN") or saved.get("token")
    if not token:
        raise click.ClickException(
            "no token: pass --token, set AIVOS_TOKEN, or start the appliance with `aivos up`"
        )
    body: dict[str, object] = {"text": text}
    if session_id:
        body["session_id"] = session_id
    if meta:
        body["metadata"] = _metadata(meta)
    try:
        resp = httpx.post(
            f"{url}/v1/infer",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the edge agent at {url}: {exc}") from exc
    if as_json:
        sys.stdout.write(resp.text.rstrip() + "\n")
        if resp.status_code >= 400:
            sys.exit(1)
        return
    data = resp.json()
    if resp.status_code >= 400:
        err = data.get("error", {})
        raise click.ClickException(f"{resp.status_code} {err.get('code')}: {err.get('message')}")
    console = Console()
    subtitle = (
        f"intent {data['intent']} ({data['confidence']:.2f}) · {data['decision']} · "
        f"{data.get('answered_by', '')} · {data['latency_ms']:.1f} ms"
    )
    generator = data.get("generator")  # the cloud model that answered (model routing)
    if generator:
        fallback = ", fallback" if generator.get("fallback") else ""
        subtitle += f" · {generator.get('model')}@{generator.get('version')}{fallback}"
    console.print(Panel(data.get("answer") or "", title="aivos", subtitle=subtitle, expand=False))
    if data.get("job_id"):
        console.print(f"[dim]job {data['job_id']}: poll {url}/v1/jobs/{data['job_id']}[/dim]")
