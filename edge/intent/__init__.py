"""Intent classification on the edge: bundle runtime and evaluation."""

from aivos.edge.intent.runtime import IntentModel, Prediction

__all__ = ["IntentModel", "Prediction"]
