"""`aivos candidates list|label|export`: the hard-example loop of a site whose residency
policy keeps hard examples on site (edge/store/reviewed.py).

`list` groups the open (unlabelled) candidates by meaning with the site's own bundle, the
way the console's review page does for a fleet (`aivos.shared.clustering`); clusters are
numbered in first-seen order over all open candidates, so a number stays put while new
candidates arrive and `--since`/`--reason` only narrow what is shown. `label` takes request
ids (or a unique prefix) and cluster numbers (``c3``); the labels are committed before it
reports. `export` writes the labelled examples as ``{"text", "label"}`` JSONL, what
`aivos models build --from-site FILE` merges into the base training data.

Safe to run while the agent serves the same data directory (SQLite serialises the writes).
The texts are the site's own, unmasked: they never leave the box through these commands.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aivos.edge.doctor.box import Box
from aivos.edge.store import Store
from aivos.edge.store import reviewed as _reviewed
from aivos.edge.store.db import db_path
from aivos.edge.store.reviewed import SiteCandidate
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.cli_options import bundle_option, data_dir_option, json_option
from aivos.shared.clustering import DEFAULT_THRESHOLD, leader_clusters, top_label
from aivos.shared.datasets import OOS_LABEL
from aivos.shared.errors import AivosError
from aivos.shared.paths import aivos_home

__all__ = ["list_cmd", "label_cmd", "export_cmd", "SiteCluster", "site_clusters"]

REASONS = ("out_of_scope", "escalated", "low_confidence")
_INTENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CLUSTER = re.compile(r"^c(\d+)$")
_AGO = re.compile(r"^(\d+)([hd])$")

F = TypeVar("F", bound=Callable[..., Any])


class SiteCluster(msgspec.Struct, frozen=True):
    id: int  # first-seen order over the open candidates (``c<id>`` on the command line)
    top_intent: str  # the guess most members got
    cohesion: float
    members: list[SiteCandidate]


def _site_options(fn: F) -> F:
    fn = bundle_option(
        "Bundle for grouping and for checking intent names (default: the agent's own)."
    )(fn)
    return data_dir_option("The agent's data directory. Default: the edge of `aivos up`.")(fn)


def _open_store(data_dir: Path | None) -> tuple[Path, Store]:
    data = data_dir or aivos_home() / "appliance" / "edge"
    if not db_path(data).is_file():
        raise click.ClickException(f"no agent store in {data} (pass --data-dir)")
    return data, Store.open(data)


def _bundle(data: Path, bundle: Path | None) -> Path | None:
    """The bundle named, else the one the agent loads; None when there is none here."""
    if bundle is not None:
        if not (bundle / "manifest.json").is_file():
            raise click.ClickException(f"{bundle} is not a bundle (no manifest.json)")
        return bundle
    try:
        found = Box.load(data).bundle
    except AivosError:
        return None
    return found if (found / "manifest.json").is_file() else None


def site_clusters(
    open_candidates: Sequence[SiteCandidate],
    bundle: Path | None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[SiteCluster]:
    """The open candidates grouped by the embeddings of `bundle` (without one: by the
    model's guess), numbered from 1 in first-seen order."""
    if not open_candidates:
        return []
    if bundle is None:
        groups: dict[str, list[SiteCandidate]] = {}
        for c in open_candidates:
            groups.setdefault(c.intent, []).append(c)
        return [SiteCluster(i + 1, k, 1.0, g) for i, (k, g) in enumerate(groups.items())]
    from aivos.edge.intent.runtime import IntentModel

    model = IntentModel.load(bundle, spelling=False)
    vectors = model.embed_batch([c.text for c in open_candidates])
    out = []
    for i, g in enumerate(leader_clusters(vectors, threshold)):
        members = [open_candidates[j] for j in g.members]
        out.append(SiteCluster(i + 1, top_label(x.intent for x in members), g.cohesion, members))
    return out


def _since(value: str | None) -> str | None:
    """``24h``/``7d`` ago, or an ISO date/time, as the store's UTC ISO timestamp."""
    if value is None:
        return None
    m = _AGO.match(value.strip())
    if m:
        unit = {"h": "hours", "d": "days"}[m.group(2)]
        ago = datetime.now(UTC) - timedelta(**{unit: int(m.group(1))})
        return ago.isoformat(timespec="microseconds")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "an ISO date/time or an age such as 24h or 7d", param_hint="--since"
        ) from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")  # as the store writes it


@click.command("list")
@_site_options
@json_option("Print the clusters as JSON.")
@click.option(
    "--since", default=None, help="Only candidates kept since (ISO date/time, or 24h, 7d)."
)
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    type=click.Choice(REASONS),
    help="Only candidates kept for this reason (repeatable).",
)
@click.option("--labelled", is_flag=True, help="List the labelled examples instead.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Cosine a candidate needs to join a cluster.",
)
def list_cmd(
    data_dir: Path | None,
    bundle: Path | None,
    as_json: bool,
    since: str | None,
    reasons: tuple[str, ...],
    labelled: bool,
    threshold: float,
) -> None:
    """List the site's open hard examples, grouped by meaning (or the labelled ones)."""
    data, store = _open_store(data_dir)
    try:
        conn = store.readers.get()
        if labelled:
            rows = _reviewed.candidates(conn, labelled=True, since=_since(since), reasons=reasons)
            _print_labelled(rows, as_json)
            return
        shown = {
            c.request_id
            for c in _reviewed.candidates(
                conn, labelled=False, since=_since(since), reasons=reasons
            )
        }
        clusters = site_clusters(
            _reviewed.candidates(conn, labelled=False), _bundle(data, bundle), threshold
        )
    finally:
        store.close()
    clusters = [
        msgspec.structs.replace(c, members=[m for m in c.members if m.request_id in shown])
        for c in clusters
    ]
    clusters = sorted((c for c in clusters if c.members), key=lambda c: -len(c.members))
    if as_json:
        sys.stdout.write(msgspec.json.encode({"clusters": clusters}).decode() + "\n")
        return
    console = Console()
    if not clusters:
        console.print(
            "no open candidates on this site"
            + (" (with these filters)" if since or reasons else "")
        )
        return
    for c in clusters:
        table = Table(
            title=f"cluster c{c.id}: {len(c.members)} request(s), mostly guessed "
            f"{escape(c.top_intent)} (cohesion {c.cohesion:.2f})",
            title_justify="left",
        )
        for column in ("request id", "reason", "guess", "text", "rated", "cloud answer"):
            table.add_column(column, overflow="fold")
        for m in c.members:
            table.add_row(
                m.request_id,
                m.reason,
                f"{escape(m.intent)} {m.confidence:.2f}",
                escape(m.text),
                {None: "", True: "helpful", False: "not helpful"}[m.helpful],
                escape((m.answer or "")[:80]) + (" (late)" if m.answer_late else ""),
            )
        console.print(table)
    console.print(
        "label with: aivos candidates label c<N>|REQUEST_ID --intent NAME | --new-intent NAME | --oos"
    )


def _print_labelled(rows: list[SiteCandidate], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(msgspec.json.encode({"labelled": rows}).decode() + "\n")
        return
    table = Table(title=f"{len(rows)} labelled example(s)", title_justify="left")
    for column in ("request id", "label", "kind", "text", "labelled at"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r.request_id,
            escape(r.label or ""),
            r.label_kind or "",
            escape(r.text),
            r.labelled_at or "",
        )
    Console().print(table)


def _check_name(name: str, kind: str, known: set[str]) -> str:
    name = name.strip()
    if not _INTENT_NAME.match(name) or name == OOS_LABEL:
        raise click.BadParameter(
            "an intent name is lower_snake_case (a-z, 0-9, _), at most 64 characters",
            param_hint=f"--{kind.replace('_', '-')}",
        )
    if kind == "intent" and name not in known:
        raise click.BadParameter(
            f"{name!r} is not an intent of the bundle or of an earlier label; "
            "to add it, use --new-intent",
            param_hint="--intent",
        )
    if kind == "new_intent" and name in known:
        raise click.BadParameter(
            f"{name!r} already exists: use --intent", param_hint="--new-intent"
        )
    return name


def _resolve(
    targets: Sequence[str], every: list[SiteCandidate], clusters: Callable[[], list[SiteCluster]]
) -> set[str]:
    ids: set[str] = set()
    by_number: dict[int, SiteCluster] | None = None
    for target in targets:
        m = _CLUSTER.match(target)
        if m:
            if by_number is None:
                by_number = {c.id: c for c in clusters()}
            cluster = by_number.get(int(m.group(1)))
            if cluster is None:
                raise click.BadParameter(
                    f"no open cluster {target} (run `aivos candidates list`)", param_hint="TARGET"
                )
            ids.update(c.request_id for c in cluster.members)
            continue
        found = [c.request_id for c in every if c.request_id.startswith(target.upper())]
        if len(target) < 6 or len(found) != 1:
            what = "matches several candidates" if len(found) > 1 else "is not a candidate"
            if len(target) < 6:
                what = "is too short a prefix (6 characters at least)"
            raise click.BadParameter(f"{target!r} {what}", param_hint="TARGET")
        ids.add(found[0])
    return ids


@click.command("label")
@_site_options
@click.argument("targets", nargs=-1, required=True, metavar="c<N>|REQUEST_ID...")
@click.option(
    "--intent", "intent", default=None, metavar="NAME", help="An intent the bundle already has."
)
@click.option(
    "--new-intent",
    "new_intent",
    default=None,
    metavar="NAME",
    help="A new intent (the next build adds it).",
)
@click.option("--oos", is_flag=True, help="Out of scope for this site.")
def label_cmd(
    data_dir: Path | None,
    bundle: Path | None,
    targets: tuple[str, ...],
    intent: str | None,
    new_intent: str | None,
    oos: bool,
) -> None:
    """Label clusters (c<N> from `list`) or requests; committed when it reports."""
    chosen = [k for k, v in (("intent", intent), ("new_intent", new_intent), ("oos", oos)) if v]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --intent NAME, --new-intent NAME, --oos")
    kind = chosen[0]
    data, store = _open_store(data_dir)
    try:
        conn = store.readers.get()
        every = _reviewed.candidates(conn)
        if not every:
            raise click.ClickException("no candidates on this site yet: nothing to label")
        source = _bundle(data, bundle)
        if kind == "oos":
            name = OOS_LABEL
        else:
            known = {c.label for c in every if c.label_kind == "new_intent" and c.label}
            if source is not None:
                manifest = load_bundle_manifest(source)
                known |= {lb for lb in manifest.labels if lb != manifest.oos_label}
            elif kind == "intent" and (intent or "").strip() not in known:
                raise click.ClickException("no bundle here to check intent names: pass --bundle")
            name = _check_name(intent or new_intent or "", kind, known)
        open_ones = [c for c in every if c.label is None]
        ids = _resolve(targets, every, lambda: site_clusters(open_ones, source))
        n = store.transact_sync(lambda c: _reviewed.label(c, ids, name, kind))
    finally:
        store.close()
    Console(stderr=True).print(
        f"labelled {n} example(s) as [bold]{escape(name)}[/bold] ({kind}); "
        "cluster numbers may have changed: list again before the next cluster label",
        highlight=False,
    )


@click.command("export")
@data_dir_option("The agent's data directory. Default: the edge of `aivos up`.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSONL file to write (default: standard output).",
)
def export_cmd(data_dir: Path | None, out: Path | None) -> None:
    """Write the labelled examples as JSONL, for `aivos models build --from-site`."""
    _, store = _open_store(data_dir)
    try:
        rows = _reviewed.reviewed(store.readers.get())
    finally:
        store.close()
    if not rows:
        raise click.ClickException(
            "no labelled examples yet: label some with `aivos candidates label`"
        )
    encoder = msgspec.json.Encoder()
    body = b"".join(encoder.encode({"text": r.text, "label": r.label}) + b"\n" for r in rows)
    if out is None:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        _write_private(out, body)
        Console(stderr=True).print(
            f"wrote {len(rows)} labelled example(s) to {out}", highlight=False
        )


def _write_private(path: Path, body: bytes) -> None:
    """Atomically, readable by the owner only (the site's own, unmasked texts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
