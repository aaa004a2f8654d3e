"""The machine-stall probe of the gRPC load test (``segd.bench.stall_probe``): a real
child process, held up for real (SIGSTOP), reports the stall; a free one reports what
it saw within its time."""

from __future__ import annotations

import os
import signal
import time

from segd.bench.stall_probe import LATE_S, StallProbe, probe, summary


def test_a_stopped_probe_reports_the_stall() -> None:
    with StallProbe(1.5) as running:
        time.sleep(0.5)  # the child is up and probing
        assert running._proc is not None
        os.kill(running._proc.pid, signal.SIGSTOP)
        time.sleep(0.25)
        os.kill(running._proc.pid, signal.SIGCONT)
    result = running.result
    assert result is not None and result["seconds"] == 1.5
    assert result["stalls"] >= 1
    assert 240 <= result["longest_ms"] <= result["total_ms"]


def test_probe_in_process_takes_its_time_and_counts_only_late_wakeups() -> None:
    started = time.perf_counter()
    got = probe(0.3)
    assert 0.3 <= time.perf_counter() - started < 1.0
    assert got["seconds"] == 0.3
    assert got["stalls"] == 0 or got["longest_ms"] > LATE_S * 1e3


def test_summary() -> None:
    assert summary([], 2.0) == {
        "seconds": 2.0,
        "stalls": 0,
        "longest_ms": 0.0,
        "total_ms": 0.0,
    }
    assert summary([0.02, 0.031], 1.0) == {
        "seconds": 1.0,
        "stalls": 2,
        "longest_ms": 31.0,
        "total_ms": 51.0,
    }
