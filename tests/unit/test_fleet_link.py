"""`FleetLink`: the fleet service's hub link state and its log (a refusal once at ERROR,
again when it changes or after `REMIND_S`), on a clock the test moves."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from aivos.cloud.console.health import link_banner
from aivos.cloud.fleet.link import REMIND_S, FleetLink
from aivos.shared.errors import JetStreamNotEnabled, JetStreamPermissionDenied, LinkDown


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def link(clock: _Clock) -> Iterator[FleetLink]:
    link = FleetLink(clock=clock)
    link.starting()
    yield link


def _denied() -> JetStreamPermissionDenied:
    return JetStreamPermissionDenied("KV bucket b", "publish", "$js.api.stream.create.kv_b")


def _levels(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.levelname for r in caplog.records]


def test_a_lasting_refusal_is_logged_once_then_as_a_reminder(
    link: FleetLink, clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aivos.cloud.fleet.service")
    for _ in range(3):
        link.failed(_denied(), retry_in_s=30)
        clock.now += 30
    assert _levels(caplog) == ["ERROR", "DEBUG", "DEBUG"]
    clock.now += REMIND_S
    link.failed(_denied(), retry_in_s=30)
    assert _levels(caplog)[-1] == "ERROR"
    link.failed(JetStreamNotEnabled("KV bucket b"), retry_in_s=30)  # another reason
    assert _levels(caplog)[-1] == "ERROR"

    status = link.status()
    assert (status.state, status.failures, status.since) == ("refused", 5, 1_000.0)
    assert status.error == "JetStreamNotEnabled"


def test_passing_faults_warn_every_try_and_never_show_the_password(
    link: FleetLink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aivos.cloud.fleet.service")
    down = LinkDown("aivos-fleet", "cannot connect to NATS at ['nats://u:s3cret@h:4222']: x")
    link.failed(down, retry_in_s=1)
    link.failed(down, retry_in_s=2)
    assert _levels(caplog) == ["WARNING", "WARNING"]
    status = link.status()
    assert (status.state, status.failures, status.error) == ("down", 2, "LinkDown")
    assert status.message is not None and "nats://***@h:4222" in status.message
    assert "s3cret" not in str(status) + caplog.text
    assert link_banner(status) is not None and "the hub is unreachable" in str(link_banner(status))


def test_up_clears_the_error_and_a_lost_connection_shows_until_reconnected(
    link: FleetLink, clock: _Clock
) -> None:
    assert link_banner(link.status()) is None  # the first try: no banner yet
    link.failed(_denied(), retry_in_s=30)
    link.connected()
    status = link.status()
    assert (status.state, status.error, status.failures) == ("up", None, 0)
    assert link_banner(status) is None

    clock.now += 5
    link.nats_state("disconnected")
    assert (link.status().state, link.status().since) == ("reconnecting", clock.now)
    assert "Fleet link interrupted" in str(link_banner(link.status()))
    link.nats_state("reconnected")
    assert link.status().state == "up"


def test_a_failed_try_s_own_connection_does_not_move_the_state(link: FleetLink) -> None:
    """A try whose setup failed closes its connection: those events are not the link's."""
    link.failed(_denied(), retry_in_s=30)
    link.nats_state("disconnected")
    link.nats_state("closed")
    assert link.status().state == "refused"
