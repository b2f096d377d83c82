"""Progress of a model build: a rich bar per stage with its ETA on a terminal, plain lines
otherwise (a log file, CI, a pipe), so no stage is silent for more than a few seconds.

The display is the project's one progress helper (`aivos.shared.progress`), named here as
the build has always called it."""

from __future__ import annotations

from aivos.shared.progress import PlainProgress
from aivos.shared.progress import progress_display as build_progress

__all__ = ["PlainProgress", "build_progress"]
