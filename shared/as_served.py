"""How offline scoring runs a bundle's graph: one query per onnxruntime run, as the edge serves
a lone query.

The int8 intent graph is quantized dynamically: every onnxruntime run computes its activation
scales over the whole input tensor, so a row's probabilities and embedding (hence its MSP and
the out-of-scope score of `ood.py`) move with the rows run beside it and with their padding (on
the CLINC150 bundle, MSP by up to 0.1-0.2 in padded batches of 64). The edge runs a lone query
per run at low load (`IntentModel.classify`; sub-batches of at most 4 under load), so a figure
measured in batches describes a model the edge never serves.

`ROWS_PER_RUN` is the one setting for every offline consumer of the graph's scores: the
build's threshold and out-of-scope statistics (`cloud/modelbuild/calibrate.py`),
`aivos intents eval` (`edge/intent/evaluate.py`), the fleet's quality gate and the edge's
post-install canary (`edge/fleet/canary.py`). A larger batch is faster, and not as served.
"""

from __future__ import annotations

__all__ = ["ROWS_PER_RUN"]

# Rows per onnxruntime run when the build calibrates and `aivos intents eval` measures.
ROWS_PER_RUN = 1
