"""benchmarks/edge_load.py: the server's CPU per request split by thread."""

from __future__ import annotations

import os
import threading
import time

from benchmarks.edge_load import _thread_cpu, _thread_split


def test_split_names_the_loop_the_busiest_other_thread_and_the_rest() -> None:
    pid = 100
    before = {100: 1.0, 101: 2.0, 102: 0.5}
    after = {100: 1.5, 101: 4.0, 102: 0.75, 103: 0.25}  # 103 started in between
    split = _thread_split(pid, before, after, requests=1000)
    assert split == {"event_loop": 0.5, "busiest_other": 2.0, "rest": 0.5}


def test_split_of_a_window_without_requests_is_zero() -> None:
    assert _thread_split(1, {1: 1.0}, {1: 2.0}, requests=0) == {
        "event_loop": 0.0,
        "busiest_other": 0.0,
        "rest": 0.0,
    }


def test_thread_cpu_reads_this_process_threads() -> None:
    spun, stop = threading.Event(), threading.Event()

    def spin() -> None:
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        spun.set()
        stop.wait()

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        assert spun.wait(60)
        cpu = _thread_cpu(os.getpid())
        assert os.getpid() in cpu
        assert worker.native_id is not None
        assert cpu[worker.native_id] >= 0.04
    finally:
        stop.set()
        worker.join()
