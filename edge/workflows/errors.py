"""The workflow engine's own errors (translated to HTTP statuses in `edge/api`)."""

from __future__ import annotations

from aivos.shared.errors import AivosError, Conflict

__all__ = ["RunConflict", "EventRefused"]


class RunConflict(Conflict):
    """The run is not in a state that allows this operation."""

    code = "run_conflict"


class EventRefused(AivosError):
    """An inbound event failed its signature check (`reason` is safe to audit)."""

    code = "event_refused"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
