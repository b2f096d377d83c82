"""Shared fixtures live in tests/fixtures/<area>.py, one module per area."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.fixtures.model",
    "tests.fixtures.nats",
    "tests.fixtures.edge",
    "tests.fixtures.postgres",
]

INTEGRATION_RERUNS = 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests get one more try (pytest-rerunfailures). They run real nats-server
    clusters, PostgreSQL, model builds and browsers side by side on a small shared CI box,
    and two CI runs in a row (and one before them) each failed on one test of about 1,500, a
    different race in a server or a library each time (each one then fixed). A second failure still fails the run, and every
    rerun is listed in the summary (`-r R`, pyproject.toml) as a bug to look at.
    Unit tests get no rerun: they must pass the first time."""
    for item in items:
        if "integration" in item.path.parts and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=INTEGRATION_RERUNS, reruns_delay=2))
