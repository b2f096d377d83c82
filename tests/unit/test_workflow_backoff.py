"""Retry timing and webhook signatures."""

from __future__ import annotations

import random

import pytest

from aivos.edge.workflows.backoff import backoff_delay, retryable_status
from aivos.edge.workflows.signatures import SignatureError, signed_headers, verify


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
    body = b'{"account_id":"ACC-1"}'
    good = signed_headers("s3cret", "dispute", body, delivery_id="d-1", timestamp=1000)
    signed = verify("s3cret", good, body, tolerance_s=60, now=1030)
    assert (signed.delivery_id, signed.event, signed.timestamp) == ("d-1", "dispute", 1000)
    lower = {k.lower(): v for k, v in good.items()}
    no_sig = {k: v for k, v in good.items() if k != "X-Aivos-Signature"}
    cases = [
        (None, good, body, 1030, "unknown_source"),
        ("s3cret", no_sig, body, 1030, "unsigned"),
        ("s3cret", {**good, "X-Aivos-Timestamp": "abc"}, body, 1030, "malformed"),
        ("s3cret", {**good, "X-Aivos-Signature": "v1=ü" + "0" * 63}, body, 1030, "malformed"),
        ("s3cret", good, body + b" ", 1030, "bad_signature"),
        ("s3cret", {**good, "X-Aivos-Event": "other"}, body, 1030, "bad_signature"),
        ("s3cret", {**good, "X-Aivos-Delivery": "d-2"}, body, 1030, "bad_signature"),
        ("other", lower, body, 1030, "bad_signature"),
        ("s3cret", good, body, 2000, "stale_timestamp"),
    ]
    for secret, headers, raw, now, reason in cases:
        with pytest.raises(SignatureError) as info:
            verify(secret, headers, raw, tolerance_s=60, now=now)
        assert info.value.reason == reason
