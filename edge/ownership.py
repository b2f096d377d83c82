"""Who may see a job or a workflow run: the client token that caused it, and operators.

Another client token gets the same `NotFound` as for an id that does not exist, so ids
cannot be probed. Sessions have their own rules (`edge/sessions.py`).
"""

from __future__ import annotations

from typing import Protocol

from aivos.edge.results import Caller
from aivos.edge.store import Store
from aivos.edge.store import jobs as _jobs
from aivos.shared.errors import JobNotFound, NotFound

__all__ = ["own_job", "check_job", "check_run", "runs_filter"]


class _Runs(Protocol):
    def run_owner(self, run_id: str) -> str | None: ...


async def own_job(store: Store, job_id: str, caller: Caller) -> None:
    """Record `caller` as the owner of a job it just created."""
    owner = caller.token_id
    if owner is not None:
        await store.transact(lambda c: _jobs.set_owner(c, job_id, owner))


def check_job(store: Store, job_id: str, caller: Caller) -> None:
    """JobNotFound unless the job exists and `caller` may see it."""
    try:
        owner = store.get_job(job_id).owner
    except NotFound as exc:
        raise JobNotFound(job_id) from exc
    if not caller.may_see(owner):
        raise JobNotFound(job_id)


def check_run(runs: _Runs, run_id: str, caller: Caller) -> None:
    """NotFound unless the run exists and `caller` may see it."""
    if not caller.may_see(runs.run_owner(run_id)):
        raise NotFound(f"no workflow run {run_id}")


def runs_filter(caller: Caller) -> str | None:
    """The owner to list runs of: None (all runs) for operators; the caller's own otherwise
    (a token without an id owns nothing: a value no run has)."""
    if caller.sees_all:
        return None
    return caller.token_id or "-"
