"""Shared fixtures live in tests/fixtures/<area>.py, one module per area."""

pytest_plugins = [
    "tests.fixtures.model",
    "tests.fixtures.nats",
    "tests.fixtures.edge",
    "tests.fixtures.postgres",
]
