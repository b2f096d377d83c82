"""Progress of long work, so that no step is silent for more than a few seconds.

For commands (a human at a terminal, or a log file, CI, a pipe):

    with progress_display(Console(stderr=True)) as progress:
        task = progress.add_task("indexing", total=len(docs))
        for doc in docs:
            ...; progress.advance(task)

gives a `rich` bar with elapsed time and ETA on a terminal, and `PlainProgress` lines
otherwise: one when a task starts, one at least every `every_s` seconds while it runs
(done/total, elapsed, ETA; also while a single long step gives no advance), one when it ends.

For services (the agent's bundle download, index re-embedding, outbox catch-up), log lines
instead: `ProgressLog` (work of known or unknown size) and `CatchUp` (a backlog that drains
while new items still arrive). Both put done/total/rate/ETA in the message and in the
record's structured `fields` (JSON logs).

The arithmetic (`eta_s`, `CatchUp.observe`) takes the time as an argument, so it is tested
without a clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = [
    "CatchUp",
    "CatchUpReport",
    "PlainProgress",
    "ProgressLog",
    "clock",
    "eta_s",
    "human_bytes",
    "progress_display",
]

Clock = Callable[[], float]


def clock(seconds: float) -> str:
    """`1h02m`, `3m05s`, `7s`."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def eta_s(done: float, total: float | None, elapsed_s: float) -> float | None:
    """Seconds left at the mean rate so far; None while it cannot be told."""
    if total is None or done <= 0 or elapsed_s <= 0:
        return None
    return max(0.0, elapsed_s / done * (total - done))


# -- commands: rich on a terminal, plain lines otherwise ------------------------------------
class _Task:
    __slots__ = ("description", "total", "completed", "started", "last_line", "in_bytes", "over")

    def __init__(self, description: str, total: float | None, in_bytes: bool, now: float) -> None:
        self.description = description
        self.total = total
        self.completed = 0.0
        self.started = self.last_line = now
        self.in_bytes = in_bytes
        self.over = False


class PlainProgress:
    """The part of `rich.progress.Progress` that commands use, as plain lines.

    A task added with ``in_bytes=True`` counts bytes. While a task runs, a line comes at
    least every `every_s` seconds, from a ticker thread when the work itself gives no
    advance (one long SQLite snapshot, one big file)."""

    def __init__(self, console: Console, every_s: float = 5.0, now: Clock = time.monotonic):
        self.console = console
        self.every_s = every_s
        self._now = now
        self._tasks: list[_Task] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> PlainProgress:
        self._ticker = threading.Thread(target=self._tick, name="plain-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        return None

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.every_s)):
            with self._lock:
                for task in self._tasks:
                    if not task.over and self._now() - task.last_line >= self.every_s:
                        self._line(task)

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _amount(self, task: _Task, n: float) -> str:
        return human_bytes(n) if task.in_bytes else f"{n:.0f}"

    def _line(self, task: _Task) -> None:
        now = self._now()
        task.last_line = now
        elapsed = now - task.started
        done = self._amount(task, task.completed)
        if task.total is None:
            self._say(f"{task.description}: {done} so far, {clock(elapsed)} elapsed")
            return
        share = task.completed / task.total if task.total else 1.0
        left = eta_s(task.completed, task.total, elapsed)
        eta = "" if left is None else f", about {clock(left)} left"
        self._say(
            f"{task.description}: {done}/{self._amount(task, task.total)} ({share:.0%}), "
            f"{clock(elapsed)} elapsed{eta}"
        )

    def add_task(
        self, description: str, total: float | None = 100, *, in_bytes: bool = False, **_: Any
    ) -> TaskID:
        with self._lock:
            self._tasks.append(_Task(description, total, in_bytes, self._now()))
            self._say(f"{description}: started")
            return TaskID(len(self._tasks) - 1)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        with self._lock:
            task = self._tasks[task_id]
            self._set(task, task.completed + advance)

    def update(
        self,
        task_id: TaskID,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **_: Any,
    ) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if description is not None:
                task.description = description
            if total is not None:
                task.total = total
            if completed is not None:
                self._set(task, completed)

    def _set(self, task: _Task, completed: float) -> None:
        task.completed = completed
        if task.over:
            return
        if task.total is not None and completed >= task.total:
            task.over = True
            self._say(f"{task.description}: done in {clock(self._now() - task.started)}")
        elif self._now() - task.last_line >= self.every_s:
            self._line(task)


def progress_display(console: Console, every_s: float = 5.0) -> Progress | PlainProgress:
    """A rich progress display on a terminal, `PlainProgress` lines otherwise."""
    if not console.is_terminal:
        return PlainProgress(console, every_s)
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


# -- services: log lines ---------------------------------------------------------------------
class ProgressLog:
    """Log lines for long work in a service: one when it starts, one at most every `every_s`
    seconds while it advances (done[/total], rate, ETA), one when `finish()` is called."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        total: float | None = None,
        *,
        unit: str = "items",
        every_s: float = 5.0,
        now: Clock = time.monotonic,
    ) -> None:
        self.log, self.what, self.total, self.unit = logger, what, total, unit
        self.every_s = every_s
        self._now = now
        self.done = 0.0
        self.started = self._last = now()
        size = "" if total is None else f" ({self._amount(total)})"
        self.log.info("%s: started%s", what, size, extra=self._extra("started"))

    def _amount(self, n: float) -> str:
        return human_bytes(n) if self.unit == "bytes" else f"{n:.0f} {self.unit}"

    def _extra(self, phase: str) -> dict[str, Any]:
        elapsed = self._now() - self.started
        fields: dict[str, Any] = {
            "progress": self.what,
            "phase": phase,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "elapsed_s": round(elapsed, 1),
            "rate_per_s": round(self.done / elapsed, 1) if elapsed > 0 else None,
        }
        left = eta_s(self.done, self.total, elapsed)
        fields["eta_s"] = None if left is None else round(left, 1)
        return {"fields": fields}

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = self._now()
        if now - self._last < self.every_s:
            return
        self._last = now
        extra = self._extra("running")
        f = extra["fields"]
        of = "" if self.total is None else f"/{self._amount(self.total)}"
        rate = f["rate_per_s"] or 0.0
        eta = "" if f["eta_s"] is None else f", about {clock(f['eta_s'])} left"
        self.log.info(
            "%s: %s%s, %s/s%s",
            self.what,
            self._amount(self.done),
            of,
            self._amount(rate),
            eta,
            extra=extra,
        )

    def finish(self) -> None:
        elapsed = self._now() - self.started
        self.log.info(
            "%s: done, %s in %s",
            self.what,
            self._amount(self.done),
            clock(elapsed),
            extra=self._extra("done"),
        )


class CatchUpReport(msgspec.Struct, frozen=True, kw_only=True):
    """Where a draining backlog stands. `rate_per_s` counts items handled (sent, dropped);
    `net_per_s` how fast the backlog shrinks (items handled minus items that arrived);
    `eta_s` = depth / net rate, None while the backlog is not shrinking."""

    phase: str  # "draining" | "caught_up"
    depth: int
    done: int
    elapsed_s: float
    rate_per_s: float
    net_per_s: float
    eta_s: float | None


class CatchUp:
    """Tracks a backlog (an outbox after a link outage) from `observe(now, depth, handled)`
    calls, `handled` being a running total. A backlog that is still there `every_s` seconds
    after it was first seen gets a report every `every_s` seconds, and one more when it is
    gone; short bursts that drain at once report nothing."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._since: float | None = None
        self._depth0 = 0
        self._handled0 = 0
        self._last = 0.0
        self._reported = False

    def reset(self) -> None:
        """Forget the backlog being tracked (e.g. the link went down: rates would mislead)."""
        self._since = None

    def observe(self, now: float, depth: int, handled: int) -> CatchUpReport | None:
        if self._since is None:
            if depth > 0:
                self._since, self._last = now, now
                self._depth0, self._handled0 = depth, handled
                self._reported = False
            return None
        if depth <= 0:
            report = self._report("caught_up", now, 0, handled) if self._reported else None
            self._since = None
            return report
        if now - self._last < self.every_s:
            return None
        self._last, self._reported = now, True
        return self._report("draining", now, depth, handled)

    def _report(self, phase: str, now: float, depth: int, handled: int) -> CatchUpReport:
        assert self._since is not None
        elapsed = now - self._since
        done = handled - self._handled0
        rate = done / elapsed if elapsed > 0 else 0.0
        net = (self._depth0 - depth) / elapsed if elapsed > 0 else 0.0
        return CatchUpReport(
            phase=phase,
            depth=depth,
            done=done,
            elapsed_s=round(elapsed, 1),
            rate_per_s=round(rate, 1),
            net_per_s=round(net, 1),
            eta_s=round(depth / net, 1) if net > 0 else None,
        )
