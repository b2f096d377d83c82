"""The support-scenario demo: a fake core-banking service and the example workflows.

`DEMO_DIR` holds `workflows/*.toml` and `secrets.toml`; `demo_settings(corebank_url)`
builds the `WorkflowSettings` that `aivos up --demo` (and the tests) use. `card_dispute`
takes the customer's account from the client token's bound `account_id`; `DEMO_BINDINGS`
is the demo customer's (`aivos tokens create --scope client --bind account_id=ACC-1001`).
"""

from __future__ import annotations

from pathlib import Path

from aivos.edge.workflows.settings import ConnectorSettings, WorkflowSettings

__all__ = ["DEMO_DIR", "WORKFLOWS_DIR", "SECRETS_FILE", "DEMO_BINDINGS", "demo_settings"]

DEMO_DIR = Path(__file__).resolve().parent
WORKFLOWS_DIR = DEMO_DIR / "workflows"
SECRETS_FILE = DEMO_DIR / "secrets.toml"
DEMO_BINDINGS = {"account_id": "ACC-1001"}  # the demo customer's client token attributes


def demo_settings(
    corebank_url: str, *, site_id: str = "site-1", **overrides: object
) -> WorkflowSettings:
    """Settings for the demo workflows, calling the fake core-banking service at `corebank_url`."""
    import msgspec

    base = WorkflowSettings(
        directory=str(WORKFLOWS_DIR),
        secrets_file=str(SECRETS_FILE),
        site_id=site_id,
        connectors={
            "corebank": ConnectorSettings(base_url=corebank_url, credential="corebank"),
        },
    )
    return msgspec.structs.replace(base, **overrides) if overrides else base
