"""Code both tiers import: wire schemas, subjects, settings, residency policy, the CLI root."""

__version__ = "0.1.0"
__all__ = ["__version__"]
