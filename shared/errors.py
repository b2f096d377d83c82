"""The one exception hierarchy. Adapters translate third-party errors with `raise X from exc`."""

from __future__ import annotations

__all__ = [
    "AivosError",
    "ConfigError",
    "DataError",
    "BundleError",
    "ModelNotFound",
    "BundleTampered",
    "LinkDown",
    "NoResponders",
    "DeadlineExceeded",
    "WorkerSaturated",
    "PolicyDenied",
    "QuotaExceeded",
    "NotFound",
    "Conflict",
    "StoreClosed",
    "GenerationFailed",
    "WorkflowInvalid",
    "StepFailed",
    "AuditChainBroken",
    "InvalidInput",
    "TextRejected",
    "TextTooLong",
    "EmptyText",
    "EmptyDocument",
    "InvalidCallbackUrl",
    "CallbackHostNotAllowed",
    "JobNotFound",
    "DocumentNotFound",
    "FactNotFound",
    "DiskFull",
    "FactLimitReached",
    "JetStreamRefused",
    "JetStreamPermissionDenied",
    "JetStreamNotEnabled",
]


class AivosError(Exception):
    """Base of every domain failure raised by aivos."""

    code = "aivos_error"


class ConfigError(AivosError):
    """Invalid configuration; `path` names the offending key (e.g. `router.intents.x`)."""

    code = "invalid_config"

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class DataError(AivosError):
    """Bad input data; `source` names the file (and line) or field at fault."""

    code = "invalid_data"

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class BundleError(AivosError):
    """A model bundle is unusable."""

    code = "bad_bundle"

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class ModelNotFound(BundleError):
    code = "model_not_found"


class BundleTampered(BundleError):
    code = "bundle_tampered"


class LinkDown(AivosError):
    code = "link_down"

    def __init__(self, site: str, message: str = "uplink is down") -> None:
        self.site = site
        super().__init__(f"{site}: {message}")


class NoResponders(AivosError):
    code = "no_responders"


class DeadlineExceeded(AivosError):
    code = "deadline_exceeded"


class WorkerSaturated(AivosError):
    code = "worker_saturated"


class PolicyDenied(AivosError):
    code = "policy_denied"


class QuotaExceeded(AivosError):
    code = "quota_exceeded"


class NotFound(AivosError):
    code = "not_found"


class Conflict(AivosError):
    """The target is not in a state that allows the operation (HTTP 409)."""

    code = "conflict"


class StoreClosed(AivosError):
    """A write was submitted to the edge store after it was closed."""

    code = "store_closed"


class ResidencyDenied(PolicyDenied):
    """The residency policy keeps `data_class` on site, or forbids sending it to `region`."""

    code = "residency_denied"

    def __init__(self, data_class: str, region: str, reason: str) -> None:
        self.data_class = data_class
        self.region = region
        self.reason = reason
        super().__init__(f"{data_class} may not leave the site for region {region!r}: {reason}")


class GenerationFailed(AivosError):
    """A generation worker answered with an error (`reason` is the worker's error code)."""

    code = "generation_failed"

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}" if message else reason)


class WorkflowInvalid(DataError):
    """A workflow definition is malformed; `source` names the file, step and field."""

    code = "invalid_workflow"


class StepFailed(AivosError):
    """A workflow step failed; `retryable` says whether another attempt may succeed."""

    code = "step_failed"

    def __init__(self, reason: str, message: str, *, retryable: bool = False) -> None:
        self.reason = reason
        self.retryable = retryable
        super().__init__(f"{reason}: {message}")


class AuditChainBroken(AivosError):
    """The audit hash chain does not verify; `seq` is the first bad row."""

    code = "audit_chain_broken"

    def __init__(self, seq: int | None, message: str) -> None:
        self.seq = seq
        super().__init__(message)


class InvalidInput(AivosError):
    """A caller's input cannot be used as given; `field` names it. The message is the
    caller's to read, so it is not prefixed with the field (unlike `DataError`)."""

    code = "invalid_input"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class TextRejected(InvalidInput):
    """The text of a query cannot be classified (the streaming endpoint reports these as
    its `error` event)."""

    code = "invalid_text"


class TextTooLong(TextRejected):
    code = "text_too_long"

    def __init__(self, length: int, limit: int, field: str = "text") -> None:
        self.length = length
        self.limit = limit
        super().__init__(field, f"text has {length} characters; the limit is {limit}")


class EmptyText(TextRejected):
    code = "empty_text"

    def __init__(self, field: str = "text") -> None:
        super().__init__(field, "text must contain non-whitespace characters")


class EmptyDocument(InvalidInput):
    code = "empty_document"

    def __init__(self) -> None:
        super().__init__("text", "document text is empty")


class InvalidCallbackUrl(InvalidInput):
    code = "invalid_callback_url"

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__("callback_url", "callback_url must be an absolute http(s) URL")


class CallbackHostNotAllowed(InvalidInput):
    code = "callback_host_not_allowed"

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            "callback_url",
            f"callback host {host!r} is not in jobs.callback_allow_hosts",
        )


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id}")


class DocumentNotFound(NotFound):
    code = "document_not_found"

    def __init__(self, doc_id: str) -> None:
        self.doc_id = doc_id
        super().__init__(f"no document {doc_id}")


class FactNotFound(NotFound):
    code = "fact_not_found"

    def __init__(self, session_id: str, key: str) -> None:
        self.session_id = session_id
        self.key = key
        super().__init__(f"no fact {key!r} in session {session_id}")


class DiskFull(AivosError):
    """The file system under the store is full (SQLITE_FULL / ENOSPC); nothing was written.
    `path` is the data directory. Writes succeed again once space is freed."""

    code = "disk_full"

    def __init__(self, path: str, message: str = "no space left for the edge store") -> None:
        self.path = path
        super().__init__(message)


class FactLimitReached(Conflict):
    """A session already holds the most facts allowed (`memory.max_facts_per_session`)."""

    code = "fact_limit_reached"

    def __init__(self, session_id: str, limit: int) -> None:
        self.session_id = session_id
        self.limit = limit
        super().__init__(
            f"session {session_id} already has {limit} facts (the limit); "
            "delete one or update an existing key"
        )


class JetStreamRefused(AivosError):
    """The NATS server will not serve this identity's JetStream calls, and asking again
    cannot change that: a fault in the server's config (accounts, permissions;
    docs/security.md), not a cluster that is not ready yet. `what` names the call."""

    code = "jetstream_refused"

    def __init__(self, what: str, message: str) -> None:
        self.what = what
        super().__init__(f"{what}: {message}")


class JetStreamPermissionDenied(JetStreamRefused):
    """The server refused this identity a subject a JetStream call needs (a missing grant
    in the hub's permissions, docs/security.md). `action`: "publish" or "subscription";
    `subject` as the client got it (nats-py lower-cases the server's error line)."""

    code = "jetstream_permission_denied"

    def __init__(self, what: str, action: str, subject: str) -> None:
        self.action, self.subject = action, subject
        verb = "publish to" if action == "publish" else "subscribe to"
        super().__init__(
            what,
            f"permission denied: this identity may not {verb} {subject!r} (as the "
            "server's error names it; nats-py lower-cases it); its hub permissions lack "
            "that grant (docs/security.md)",
        )


class JetStreamNotEnabled(JetStreamRefused):
    """The server runs JetStream, but not for the account this identity is in (a 503 with
    ``err_code`` 10039)."""

    code = "jetstream_not_enabled"

    def __init__(self, what: str) -> None:
        super().__init__(
            what,
            "JetStream is not enabled for this identity's account on the server (503, "
            "err_code 10039); enable it for that account (`jetstream: enabled` in its "
            "account block; aivos puts every identity in account AIVOS, which has it, "
            "docs/security.md)",
        )
