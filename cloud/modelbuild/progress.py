"""Progress of a model build: a rich bar per stage with its ETA on a terminal, plain lines
otherwise (a log file, CI, a pipe), so no stage is silent for more than a few seconds."""

from __future__ import annotations

import time
from types import TracebackType

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

__all__ = ["PlainProgress", "build_progress"]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class _Task:
    __slots__ = ("description", "total", "completed", "started", "last_line")

    def __init__(self, description: str, total: float) -> None:
        self.description = description
        self.total = total
        self.completed = 0.0
        self.started = self.last_line = time.monotonic()


class PlainProgress:
    """What `build_bundle` uses of `rich.progress.Progress`, as lines: one when a stage
    starts, one at most every `every_s` seconds while it advances (done/total, elapsed,
    ETA) and one when it ends."""

    def __init__(self, console: Console, every_s: float = 5.0) -> None:
        self.console = console
        self.every_s = every_s
        self._tasks: list[_Task] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def add_task(self, description: str, total: float | None = 1) -> TaskID:
        self._tasks.append(_Task(description, float(total or 1)))
        self._say(f"{description}: started")
        return TaskID(len(self._tasks) - 1)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        task = self._tasks[task_id]
        task.completed += advance
        now = time.monotonic()
        if now - task.last_line >= self.every_s and task.completed < task.total:
            task.last_line = now
            elapsed = now - task.started
            eta = elapsed / task.completed * (task.total - task.completed)
            self._say(
                f"{task.description}: {task.completed:.0f}/{task.total:.0f} "
                f"({task.completed / task.total:.0%}), {_clock(elapsed)} elapsed, "
                f"about {_clock(eta)} left"
            )

    def update(self, task_id: TaskID, *, completed: float | None = None) -> None:
        task = self._tasks[task_id]
        if completed is not None:
            finished = task.completed < task.total <= completed
            task.completed = completed
            if finished:
                self._say(f"{task.description}: done in {_clock(time.monotonic() - task.started)}")


def build_progress(console: Console) -> Progress | PlainProgress:
    """A rich progress display on a terminal, `PlainProgress` lines otherwise."""
    if not console.is_terminal:
        return PlainProgress(console)
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
