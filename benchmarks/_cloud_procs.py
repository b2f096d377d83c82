"""Real cloud-tier processes for the model benchmarks (autoscale_burst.py, model_failover.py):
`aivos` commands started in their own process group, stopped with a grace period, and the
errors requests end with, as short keys for a histogram."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from aivos.shared.errors import AivosError, GenerationFailed

__all__ = ["cli", "error_key", "spawn", "stop"]


def error_key(exc: AivosError) -> str:
    """The exception's name, with the cloud's error code and reasons when it has them."""
    if isinstance(exc, GenerationFailed):
        return f"{type(exc).__name__}: {exc}"[:120]
    return type(exc).__name__


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "aivos", *args]


def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A real process in its own process group (a pool's workers join it), logging to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM (a pool drains its workers), then SIGKILL to the whole group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
