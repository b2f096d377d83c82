"""Retry timing and webhook signatures."""

from __future__ import annotations

import random

import pytest

from aivos.edge.workflows.backoff import backoff_delay, retryable_status
from aivos.edge.workflows.signatures import ReplayGuard, SignatureError, sign, verify


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    for attempt, step in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (8, 1.0)]:
        delays = [backoff_delay(attempt, 0.1, 1.0, rng) for _ in range(200)]
        assert min(delays) >= step / 2 and max(delays) <= step
        assert len(set(delays)) > 100  # jittered, not a fixed schedule


@pytest.mark.parametrize(
    ("status", "retry"),
    [(500, True), (503, True), (429, True), (400, False), (404, False), (409, False)],
)
def test_only_5xx_and_429_are_retryable(status: int, retry: bool) -> None:
    assert retryable_status(status) is retry


def test_signature_verification() -> None:
    body = b'{"type":"dispute"}'
    sig = sign("s3cret", 1000, body)
    verify("s3cret", sig, "1000", body, tolerance_s=60, now=1030)
    cases = [
        (None, sig, "1000", body, "unknown_source"),
        ("s3cret", None, "1000", body, "unsigned"),
        ("s3cret", sig, "abc", body, "bad_timestamp"),
        ("s3cret", sig, "1000", body + b" ", "bad_signature"),
        ("other", sig, "1000", body, "bad_signature"),
        ("s3cret", sig, "1000", body, "stale_timestamp"),
    ]
    for secret, signature, ts, raw, reason in cases:
        now = 2000 if reason == "stale_timestamp" else 1030
        with pytest.raises(SignatureError) as info:
            verify(secret, signature, ts, raw, tolerance_s=60, now=now)
        assert info.value.reason == reason
    guard = ReplayGuard()
    verify("s3cret", sig, "1000", body, tolerance_s=60, guard=guard, now=1030)
    with pytest.raises(SignatureError, match="replayed"):
        verify("s3cret", sig, "1000", body, tolerance_s=60, guard=guard, now=1031)
