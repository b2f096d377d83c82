"""`aivos doctor`: check a branch box and say what is wrong, in words.

Each check looks at one thing and returns `Finding`s (``ok``, ``warn`` or ``fail`` with a
sentence an operator can act on). The checks read the box as it is, while the agent serves
or not: the store through a read-only connection, the bundle with a real inference on the
execution provider the settings ask for, the NATS link with a real connection, the site
kit's certificates by their dates.

    box = Box.load(data_dir, config)
    findings = run_checks(box)          # every check, in `CHECKS` order
"""

from __future__ import annotations

from aivos.edge.doctor.box import Box, Finding, Status
from aivos.edge.doctor.checks import CHECKS, run_checks

__all__ = ["Box", "Finding", "Status", "CHECKS", "run_checks"]
