"""The step kinds a workflow can use, one module each, and the runner that dispatches them.

To add a kind: declare its Struct in `spec.py` (tagged with the `kind` name, added to the
`Step` union), write ``async def <kind>(step, call, env) -> Outcome`` in a new module here
(raise `StepFailed` on failure), and add one row to `KINDS` in `runner.py`; its load-time
checks go in `loader._check`. A kind with a side effect also belongs in
`safety.side_effect_refs` and makes its idempotency key durable before it calls out
(see `effects.py`).
"""

from aivos.edge.workflows.steps.base import Outcome, StepCall, StepEnv
from aivos.edge.workflows.steps.runner import KINDS, StepKind, StepRunner

__all__ = ["KINDS", "Outcome", "StepCall", "StepEnv", "StepKind", "StepRunner"]
