"""The side-effect kinds: `http` (a connector call) and `emit` (a webhook POST or a
site-local NATS event).

Both first check that no unreviewed model output reaches the call (`safety.check_runtime`),
then make the step's idempotency key durable, then call: a crash after the call re-sends
the same key on resume, and the receiver deduplicates. `_call_http` is the one place a
workflow makes an HTTP request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from aivos.edge.workflows.backoff import backoff_delay
from aivos.edge.workflows.connectors import quote_segment
from aivos.edge.workflows.safety import check_runtime
from aivos.edge.workflows.spec import EmitStep, HttpStep, kind_of
from aivos.edge.workflows.steps.base import Outcome, StepCall, StepEnv
from aivos.edge.workflows.template import Template, render_value
from aivos.shared.errors import StepFailed
from aivos.shared.subjects import event_subject

__all__ = ["http", "emit"]


async def http(step: HttpStep, call: StepCall, env: StepEnv) -> Outcome:
    check_runtime(call.workflow, step, call.ctx, call.approvals)
    path = Template(step.path).render(call.ctx, strict=True, escape=quote_segment)
    query = {k: Template(v).render(call.ctx, strict=True) for k, v in step.query.items()}
    body = render_value(step.body, call.ctx, strict=True) if step.body is not None else None
    request = {
        "method": step.method,
        "connector": step.connector,
        "path": path,
        "query": query,
        "body": body,
    }
    idem_key = await _begin(step, call, env, request)
    output = await _call_http(
        step, call, env, step.connector, step.method, path, query, body, idem_key
    )
    return Outcome(output=output, input=request)


async def emit(step: EmitStep, call: StepCall, env: StepEnv) -> Outcome:
    check_runtime(call.workflow, step, call.ctx, call.approvals)
    path = Template(step.path).render(call.ctx, strict=True, escape=quote_segment)
    payload = render_value(step.payload, call.ctx, strict=True)
    request = {"nats": step.nats, "webhook": step.webhook, "path": path, "payload": payload}
    idem_key = await _begin(step, call, env, request)
    if step.webhook is not None:
        output = await _call_http(
            step, call, env, step.webhook, "POST", path, {}, payload, idem_key
        )
    else:
        output = await _publish(step, call, env, payload, idem_key)
    return Outcome(output=output, input=request)


async def _begin(
    step: HttpStep | EmitStep, call: StepCall, env: StepEnv, request: dict[str, Any]
) -> str:
    """The step's idempotency key, durable (with every earlier step) before the call."""
    prior, run = call.prior, call.run
    idem_key = prior.idem_key if prior is not None and prior.idem_key else f"{run.id}.{step.id}"
    if prior is None or prior.state != "running":
        await env.journal.begin_step(
            run.id,
            seq=call.seq,
            step_id=step.id,
            kind=kind_of(step),
            state="running",
            input=request,
            idem_key=idem_key,
        )
    await env.journal.sync(run.id)  # earlier steps committed with (or before) the key
    return idem_key


def _on_retry(step: HttpStep | EmitStep, env: StepEnv) -> Any:
    kind = kind_of(step)

    def on_retry() -> None:
        env.metrics.retries.inc(kind=kind)

    return on_retry


async def _call_http(
    step: HttpStep | EmitStep,
    call: StepCall,
    env: StepEnv,
    connector: str,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
    idem_key: str,
) -> dict[str, Any]:
    return await env.http.call(
        connector,
        method,
        path,
        query=query,
        body=body,
        timeout_s=step.timeout_s,
        retries=step.retries,
        backoff_s=step.backoff_s,
        backoff_cap_s=step.backoff_cap_s,
        idem_key=idem_key,
        trace_id=call.run.trace_id,
        attempt_log=call.attempt_log,
        on_retry=_on_retry(step, env),
    )


async def _publish(
    step: EmitStep, call: StepCall, env: StepEnv, payload: Any, idem_key: str
) -> dict[str, Any]:
    """Publish on ``aivos.evt.<site>.<name>``, the idempotency key as `Nats-Msg-Id`."""
    assert step.nats is not None
    subject = event_subject(env.site_id, step.nats)
    data = msgspec.json.encode(payload)
    attempt_log = call.attempt_log
    on_retry = _on_retry(step, env)
    for attempt in range(1, step.retries + 2):
        entry: dict[str, Any] = {"attempt": len(attempt_log) + 1, "at": time.time()}
        nc = env.nc_provider() if env.nc_provider is not None else None
        try:
            if nc is None or not nc.is_connected:
                raise StepFailed("link_down", "no site NATS connection", retryable=True)
            await nc.publish(
                subject,
                data,
                headers={"Nats-Msg-Id": idem_key, "Aivos-Trace-Id": call.run.trace_id},
            )
            await nc.flush(timeout=step.timeout_s)
            entry["outcome"] = "ok"
            attempt_log.append(entry)
            return {"subject": subject, "bytes": len(data)}
        except StepFailed as exc:
            entry.update(outcome="link_down", error=exc.reason)
        except Exception as exc:
            entry.update(outcome="publish_error", error=type(exc).__name__)
        attempt_log.append(entry)
        if attempt <= step.retries:
            on_retry()
            await asyncio.sleep(backoff_delay(attempt, step.backoff_s, step.backoff_cap_s))
    raise StepFailed("publish_failed", f"could not publish to {subject}")
