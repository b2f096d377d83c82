"""systemd units and the journald namespace config, rendered from the templates shipped in
``aivos/install/templates`` (``string.Template``: ``${name}``; ``$$`` is a literal ``$``).

The templates are the only copy of the units; ``images/README.md`` points here."""

from __future__ import annotations

import string
from importlib import resources

__all__ = ["EDGE_UNITS", "CLOUD_UNITS", "HUB_UNIT", "HUB_CLUSTER_UNIT", "render", "template_names"]

EDGE_UNITS = ("aivos-leaf.service", "aivos-edge.service")
HUB_UNIT = "aivos-hub.service"  # the single hub
HUB_CLUSTER_UNIT = "aivos-hub@.service"  # node i of a hub cluster: aivos-hub@i
CLOUD_UNITS = (  # besides one of the two hub units
    "aivos-ingest.service",
    "aivos-console.service",
    "aivos-worker@.service",
    "aivos-cloud.target",
)


def _template(name: str) -> str:
    return (resources.files("aivos.install") / "templates" / name).read_text()


def template_names() -> list[str]:
    folder = resources.files("aivos.install") / "templates"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("_"))


def render(name: str, **values: str) -> str:
    """The template `name` with `values` and the shared hardening block filled in; a
    placeholder without a value is an error (`KeyError`), never an empty string."""
    hardening = _template("_hardening.inc").rstrip("\n")
    return string.Template(_template(name)).substitute(values, hardening=hardening)
