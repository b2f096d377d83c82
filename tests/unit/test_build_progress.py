"""Model build progress: plain lines when the console is not a terminal (logs, CI, pipes)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from aivos.cloud.modelbuild.progress import PlainProgress, build_progress


def test_a_pipe_gets_plain_lines_with_counts_and_eta() -> None:
    out = io.StringIO()
    progress = build_progress(Console(file=out, force_terminal=False, width=200))
    assert isinstance(progress, PlainProgress)
    progress.every_s = 0  # a line on every step (the default is one per 5 s)
    with progress:
        task = progress.add_task("fine-tune encoder + head", total=4)
        for _ in range(3):
            progress.advance(task, 1)
        progress.update(task, completed=4)
    lines = out.getvalue().splitlines()
    assert lines[0] == "fine-tune encoder + head: started"
    assert lines[1].startswith("fine-tune encoder + head: 1/4 (25%), ")
    assert "left" in lines[1]
    assert lines[3].startswith("fine-tune encoder + head: 3/4 (75%)")
    assert lines[-1].startswith("fine-tune encoder + head: done in ")


def test_a_terminal_gets_rich_bars() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(build_progress(console), Progress)
