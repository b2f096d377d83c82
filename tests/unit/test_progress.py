"""shared/progress.py: plain progress lines, service progress logs, catch-up arithmetic."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from rich.console import Console

from aivos.edge.knowledge import KnowledgeIndex
from aivos.shared.progress import (
    CatchUp,
    PlainProgress,
    ProgressLog,
    clock,
    eta_s,
    human_bytes,
    progress_display,
)
from tests.fixtures.wait import eventually_sync
from tests.unit.test_knowledge_index import CARDS, HOURS, HashEmbedder


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _plain(every_s: float = 5.0) -> tuple[PlainProgress, io.StringIO, _Clock]:
    out, now = io.StringIO(), _Clock()
    console = Console(file=out, force_terminal=False, width=200)
    return PlainProgress(console, every_s=every_s, now=now), out, now


def test_formatting_and_eta() -> None:
    assert [clock(7), clock(185), clock(3725)] == ["7s", "3m05s", "1h02m"]
    assert [human_bytes(512), human_bytes(3 << 20)] == ["512 B", "3.0 MiB"]
    assert eta_s(25, 100, 10.0) == 30.0  # 2.5/s, 75 left
    assert eta_s(0, 100, 10.0) is None and eta_s(5, None, 10.0) is None
    assert eta_s(120, 100, 10.0) == 0.0


def test_progress_display_is_plain_when_not_a_terminal() -> None:
    assert isinstance(progress_display(Console(file=io.StringIO())), PlainProgress)
    tty = Console(file=io.StringIO(), force_terminal=True)
    assert not isinstance(progress_display(tty), PlainProgress)


def test_plain_lines_start_every_few_seconds_and_done() -> None:
    progress, out, now = _plain()
    task = progress.add_task("indexing", total=100)
    progress.advance(task, 10)  # under 5 s since the last line: quiet
    now.t += 5
    progress.advance(task, 15)  # 25/100 in 5 s -> 15 s left
    now.t += 1
    progress.advance(task, 10)  # quiet again
    now.t += 2
    progress.update(task, completed=100)
    progress.advance(task, 1)  # after done: nothing more
    assert out.getvalue().splitlines() == [
        "indexing: started",
        "indexing: 25/100 (25%), 5s elapsed, about 15s left",
        "indexing: done in 8s",
    ]


def test_plain_bytes_and_unknown_total() -> None:
    progress, out, now = _plain()
    sized = progress.add_task("archive", total=8 << 20, in_bytes=True)
    open_ended = progress.add_task("download", total=None, in_bytes=True)
    now.t += 6
    progress.update(sized, completed=2 << 20)
    progress.advance(open_ended, 1536)
    assert out.getvalue().splitlines()[2:] == [
        "archive: 2.0 MiB/8.0 MiB (25%), 6s elapsed, about 18s left",
        "download: 1.5 KiB so far, 6s elapsed",
    ]


def test_plain_ticker_speaks_during_a_long_silent_step() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with PlainProgress(console, every_s=0.05) as progress:
        progress.add_task("snapshot aivos.db", total=10)  # no advance at all
        eventually_sync(
            lambda: "snapshot aivos.db: 0/10 (0%)" in out.getvalue(),
            timeout=30,
            what="a line while the step gives no advance",
        )


def test_progress_log_lines_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    now = _Clock()
    logger = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress = ProgressLog(logger, "re-embedding", 1000, unit="chunks", now=now)
        progress.advance(100)  # quiet: under every_s
        now.t += 5
        progress.advance(150)  # 250 in 5 s: 50/s, 750 left -> 15 s
        now.t += 5
        progress.advance(750)
        progress.finish()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "re-embedding: started (1000 chunks)",
        "re-embedding: 250 chunks/1000 chunks, 50 chunks/s, about 15s left",
        "re-embedding: 1000 chunks/1000 chunks, 100 chunks/s, about 0s left",
        "re-embedding: done, 1000 chunks in 10s",
    ]
    running = caplog.records[1].fields  # type: ignore[attr-defined]
    assert running["done"] == 250 and running["total"] == 1000
    assert running["rate_per_s"] == 50.0 and running["eta_s"] == 15.0


def test_catch_up_reports_depth_rate_and_eta() -> None:
    catch = CatchUp(every_s=5)
    assert catch.observe(0.0, depth=0, handled=0) is None  # nothing pending: nothing tracked
    assert catch.observe(1.0, depth=10_000, handled=0) is None  # backlog seen at t=1
    assert catch.observe(3.0, depth=8_000, handled=2_000) is None  # under 5 s: quiet
    # t=6: 4,000 sent in 5 s (800/s) while 500 new arrived: net 700/s, 6,500 left
    report = catch.observe(6.0, depth=6_500, handled=4_000)
    assert report is not None and report.phase == "draining"
    assert (report.depth, report.done, report.elapsed_s) == (6_500, 4_000, 5.0)
    assert (report.rate_per_s, report.net_per_s) == (800.0, 700.0)
    assert report.eta_s == pytest.approx(6_500 / 700, abs=0.1)
    assert catch.observe(8.0, depth=5_000, handled=5_500) is None  # under 5 s since the last
    done = catch.observe(12.0, depth=0, handled=10_500)
    assert done is not None and done.phase == "caught_up"
    assert (done.done, done.elapsed_s, done.eta_s) == (10_500, 11.0, 0.0)


def test_catch_up_growing_backlog_has_no_eta_and_short_bursts_are_quiet() -> None:
    catch = CatchUp(every_s=5)
    catch.observe(0.0, depth=1_000, handled=0)
    growing = catch.observe(5.0, depth=1_500, handled=500)
    assert growing is not None and growing.net_per_s == -100.0 and growing.eta_s is None
    burst = CatchUp(every_s=5)
    burst.observe(0.0, depth=300, handled=0)
    assert burst.observe(0.4, depth=0, handled=300) is None  # never reported: no "caught up"
    catch.reset()
    assert catch.observe(6.0, depth=900, handled=500) is None  # a new backlog from here


def test_reembedding_logs_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with KnowledgeIndex.open(tmp_path / "kb", HashEmbedder("hash-v1")) as kb:
        kb.add_document("cards.md", CARDS)
        kb.add_document("hours.md", HOURS)
        n = len(kb)
    with (
        caplog.at_level(logging.INFO, logger="aivos.edge.knowledge.index"),
        KnowledgeIndex.open(tmp_path / "kb", HashEmbedder("hash-v2")) as kb,
    ):
        assert kb.rebuilt
    messages = [r.getMessage() for r in caplog.records]
    assert f"knowledge index re-embedding: started ({n} chunks)" in messages
    assert any(m.startswith(f"knowledge index re-embedding: done, {n} chunks") for m in messages)
