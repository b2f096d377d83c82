"""aivos: an edge-to-cloud hybrid inference appliance.

One import name for the whole distribution. The tiers live in their own folders and are
mapped here by the build (see pyproject.toml): `aivos.shared` (code both tiers import),
`aivos.edge` (the branch agent) and `aivos.cloud` (workers, ingest, console). This package
itself is the composition layer on top: the `aivos` command (`aivos.cli`) and the one-machine
launcher (`aivos.up`) are the only modules that may import both tiers.
"""

from aivos.shared import __version__

__all__ = ["__version__"]
