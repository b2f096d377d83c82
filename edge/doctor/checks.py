"""The box's own checks: disk, store, audit chain, outbox, retention, bundle, provider,
router thresholds. (The NATS link and certificates are in `link.py`.)"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aivos.edge.doctor.box import Box, Finding, fail, ok, warn
from aivos.edge.doctor.clock import check_clock
from aivos.edge.doctor.link import check_certificates, check_nats
from aivos.edge.store.audit import verify as verify_audit
from aivos.edge.store.db import db_path
from aivos.edge.store.outbox import Outbox
from aivos.shared.errors import AivosError
from aivos.shared.sqlite import open_reader

__all__ = ["CHECKS", "run_checks"]

log = logging.getLogger(__name__)

_GIB = 1 << 30
_PROBE_TEXT = "what are your opening hours"


def check_disk(box: Box) -> list[Finding]:
    usage = shutil.disk_usage(box.data_dir if box.data_dir.exists() else box.data_dir.parent)
    free_pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    said = f"{usage.free / _GIB:.1f} GiB free of {usage.total / _GIB:.1f} GiB ({free_pct:.0f}%)"
    refuse_at = box.settings.store.min_free_mb * (1 << 20)
    detail = {"free_bytes": usage.free, "total_bytes": usage.total}
    if usage.free < refuse_at:
        return [
            fail(
                "disk",
                f"{said}: below the store's minimum ({box.settings.store.min_free_mb:.0f} MB), "
                "so the agent refuses writes; free space on the data dir's file system",
                **detail,
            )
        ]
    if free_pct < 10 or usage.free < _GIB:
        return [warn("disk", f"{said}: running low; the store needs room to grow", **detail)]
    return [ok("disk", said, **detail)]


@contextlib.contextmanager
def _reader(box: Box) -> Iterator[sqlite3.Connection]:
    conn = open_reader(db_path(box.data_dir))
    try:
        yield conn
    finally:
        conn.close()


def check_store(box: Box) -> list[Finding]:
    path = db_path(box.data_dir)
    if not path.is_file():
        return [fail("store", f"no store at {path}: is {box.data_dir} an agent's data dir?")]
    try:
        with _reader(box) as conn:
            rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
            conn.execute("BEGIN")
            chain = verify_audit(conn)
            conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        return [fail("store", f"cannot read {path}: {exc} (restore it from a backup)")]
    out: list[Finding] = []
    if rows == ["ok"]:
        out.append(ok("store", f"{path.name} passes SQLite's quick_check"))
    else:
        problems = "; ".join(rows[:3])
        out.append(fail("store", f"{path} is damaged ({problems}); restore it from a backup"))
    if chain.ok:
        out.append(ok("audit", f"audit chain intact ({chain.n_rows} rows)", rows=chain.n_rows))
    else:
        out.append(fail("audit", f"audit chain broken: {chain.reason}", seq=chain.first_bad_seq))
    return out


def _age(iso: str | None) -> timedelta | None:
    if not iso:
        return None
    try:
        return datetime.now(UTC) - datetime.fromisoformat(iso)
    except ValueError:
        return None


def check_outbox(box: Box) -> list[Finding]:
    if not db_path(box.data_dir).is_file():
        return []
    with _reader(box) as conn:
        depth = Outbox.depth(conn)
        row = conn.execute(
            "SELECT created_at FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT 1"
        ).fetchone()
    quota = box.settings.outbox.quota
    oldest = _age(row["created_at"] if row else None)
    hours = oldest.total_seconds() / 3600 if oldest else 0.0
    said = f"{depth} records waiting to sync (quota {quota})"
    if depth:
        said += f", the oldest {hours:.1f} h old"
    detail = {"depth": depth, "quota": quota, "oldest_hours": round(hours, 2)}
    if depth >= quota:
        when = box.settings.outbox.when_full
        return [fail("outbox", f"{said}: full, new records are {when}ed; check the link", **detail)]
    if depth > 0.8 * quota or (depth and hours > 24):
        return [warn("outbox", f"{said}: not draining; check the NATS link below", **detail)]
    return [ok("outbox", said, **detail)]


def check_retention(box: Box) -> list[Finding]:
    r, memory_days = box.settings.retention, box.settings.memory.retention_days
    said = (
        f"every {r.interval_s / 3600:g} h: synced outbox records after {r.outbox_sent_days:g} d, "
        f"memory after {memory_days:g} d, jobs after {r.jobs_days:g} d, "
        f"workflow runs after {r.runs_days:g} d"
    )
    detail = {
        "interval_s": r.interval_s,
        "outbox_sent_days": r.outbox_sent_days,
        "memory_days": memory_days,
        "jobs_days": r.jobs_days,
        "runs_days": r.runs_days,
    }
    if not db_path(box.data_dir).is_file():
        return [ok("retention", said, **detail)]
    # two intervals of slack: the task runs every interval_s while the agent serves
    limit = datetime.now(UTC) - timedelta(days=r.outbox_sent_days, seconds=2 * r.interval_s)
    with _reader(box) as conn:
        stale = conn.execute(
            "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
            (limit.isoformat(timespec="microseconds"),),
        ).fetchone()["n"]
    if stale:
        return [
            warn(
                "retention",
                f"{stale} synced outbox records are past their retention ({said}): the "
                "retention task has not run; is the agent running?",
                stale=stale,
                **detail,
            )
        ]
    return [ok("retention", said, **detail)]


def check_bundle(box: Box) -> list[Finding]:
    from aivos.edge.fleet.installed import load_trusted_keys
    from aivos.shared.bundle import load_bundle_manifest
    from aivos.shared.fleet import verify_bundle_signature

    bundle = box.bundle
    try:
        manifest = load_bundle_manifest(bundle)  # every file's sha256 against the manifest
    except AivosError as exc:
        return [fail("bundle", f"bundle {bundle}: {exc}", path=str(bundle))]
    said = f"bundle {manifest.bundle_version} at {bundle}: every file matches its sha256"
    detail = {"version": manifest.bundle_version, "path": str(bundle)}
    if not (bundle / "signature.json").is_file():
        if box.fleet_installed:
            return [fail("bundle", f"{said}, but the fleet installed it unsigned", **detail)]
        return [ok("bundle", f"{said}; unsigned (built on this machine)", **detail)]
    keys_dir = box.settings.fleet.trusted_keys_dir or str(box.data_dir / "fleet" / "trusted_keys")
    try:
        keys = load_trusted_keys(Path(keys_dir))
    except AivosError:
        return [warn("bundle", f"{said}; signed, but no trusted keys in {keys_dir}", **detail)]
    try:
        verify_bundle_signature(bundle, keys)
    except AivosError as exc:
        return [fail("bundle", f"bundle {bundle}: signature check failed: {exc}", **detail)]
    return [ok("bundle", f"{said}; signature verified with a trusted key", **detail)]


def check_provider(box: Box) -> list[Finding]:
    """Load the bundle on the configured providers and classify one real query: the provider
    reported is the one onnxruntime's profiler saw run the kernels, not the configured one."""
    from aivos.edge.intent.runtime import IntentModel, provider_name

    settings = box.settings.model
    wanted = settings.providers
    try:
        model = IntentModel.load(
            box.bundle,
            providers=wanted,
            intra_op_threads=1,
            provider_options=settings.provider_options,
        )
        prediction = model.classify(_PROBE_TEXT)
    except AivosError as exc:
        return [fail("provider", f"no inference possible: {exc}", wanted=wanted)]
    proof = model.proof
    said = f"a real inference ran on {model.provider} (intent {prediction.intent!r})"
    detail = {
        "provider": model.provider,
        "wanted": wanted,
        "kernel_us": proof.kernel_us,
        "options": {
            provider_name(name): opts for name, opts in settings.provider_options.items()
        }.get(proof.wanted, {}),
    }
    if not proof.as_asked:
        # e.g. "asked for OpenVINO, running on CPU: OpenVINO is not installed (...)"
        return [warn("provider", f"{proof.describe()}; {said}", reason=proof.reason, **detail)]
    return [ok("provider", said, **detail)]


def check_router(box: Box) -> list[Finding]:
    """The router policy's per-intent threshold overrides against the score the bundle
    serves (edge/router.py `threshold_scale_warning`): overrides written for the MSP are
    stricter than meant on a bundle serving the `shared/ood.py` score. The site's own policy
    (the config's ``[router]`` or ``router_policy`` file); a fleet config's ``thresholds``
    are checked by the agent when it applies them."""
    from aivos.edge.router import MSP_SCORE, load_router_policy, threshold_scale_warning
    from aivos.shared.bundle import load_bundle_manifest

    settings = box.settings
    try:
        manifest = load_bundle_manifest(box.bundle)
    except AivosError:
        return []  # the bundle check says why
    try:
        policy = (
            load_router_policy(Path(settings.router_policy))
            if settings.router_policy
            else settings.router
        )
        policy.validate_against(list(manifest.labels))
    except AivosError as exc:
        return [fail("router", f"router policy: {exc}")]
    # the agent serves a bundle's out-of-scope score whenever it carries one (runtime.py)
    served = manifest.ood.score if manifest.ood is not None else MSP_SCORE
    overrides = policy.threshold_overrides()
    detail = {
        "served_score": served,
        "threshold_score": policy.threshold_score,
        "overrides": overrides,
    }
    warning = threshold_scale_warning(policy, served)
    if warning is not None:
        return [warn("router", warning, **detail)]
    if not overrides:
        said = f"no per-intent threshold overrides; the bundle's {served!r} threshold applies"
    else:
        said = f"{len(overrides)} per-intent threshold override(s), written for {served!r}"
    return [ok("router", said, **detail)]


CHECKS: tuple[Callable[[Box], list[Finding]], ...] = (
    check_disk,
    check_store,
    check_outbox,
    check_retention,
    check_bundle,
    check_provider,
    check_router,
    check_nats,
    check_clock,
    check_certificates,
)


def run_checks(box: Box) -> list[Finding]:
    """Every check; one that raises unexpectedly is itself a failed finding."""
    findings: list[Finding] = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            findings.extend(check(box))
        except Exception as exc:  # a doctor reports, it does not crash
            log.debug("check %s raised", name, exc_info=True)
            findings.append(fail(name, f"the check itself failed: {type(exc).__name__}: {exc}"))
    return findings
