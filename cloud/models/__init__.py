"""Generation model management: the model router (classes, versions, fallbacks, circuit
breakers, per-site quotas and usage), and autoscaled worker pools. The catalogue itself and
the workers live in `aivos.cloud.worker`."""
