"""The one table from domain error to HTTP status, used by the edge API and the cloud console.

Both tiers' HTTP layers look a raised `AivosError` up here (the most specific class wins);
neither the domain code nor this module knows anything about a web framework. A class not
in the table gets the tier's `default`: the edge agent answers 503 (something it depends on
failed), the console 400 (the fleet refused what the operator asked for).
"""

from __future__ import annotations

from collections.abc import Mapping

from aivos.shared.errors import (
    AivosError,
    Conflict,
    DataError,
    DiskFull,
    InvalidInput,
    JetStreamRefused,
    LinkDown,
    NotFound,
    PolicyDenied,
    QuotaExceeded,
    TextTooLong,
)

__all__ = ["HTTP_STATUS", "http_status"]

HTTP_STATUS: Mapping[type[AivosError], int] = {
    TextTooLong: 413,
    InvalidInput: 400,
    DataError: 400,
    NotFound: 404,
    Conflict: 409,
    PolicyDenied: 403,
    QuotaExceeded: 507,
    DiskFull: 507,
    LinkDown: 503,
    JetStreamRefused: 503,  # the hub's config lacks a grant or JetStream: not the caller's fault
}


def http_status(exc: AivosError, default: int) -> int:
    """The status of `exc`: its class's entry, else its nearest listed base's, else `default`."""
    for cls in type(exc).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return default
