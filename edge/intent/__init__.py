"""Intent classification on the edge: bundle runtime and evaluation."""

from edge.intent.runtime import IntentModel, Prediction

__all__ = ["IntentModel", "Prediction"]
