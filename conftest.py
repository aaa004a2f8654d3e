"""Hooks for every pytest run in this repository (tests/ and the bench/ micro-benchmarks).

pyproject's addopts give ``-n auto``: the test suite runs on one pytest-xdist worker per
core. pytest-benchmark refuses to time anything under xdist (and ``--benchmark-only``
then stops with a usage error), so a run of the kernel micro-benchmarks gets no workers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent / "bench"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """0 (run in this process) for a benchmark run, else xdist's own choice (None)."""
    timing = config.getoption("benchmark_only", default=False) or config.getoption(
        "benchmark_enable", default=False
    )
    paths = [Path(a.split("::")[0]).resolve() for a in config.args]
    only_bench = bool(paths) and all(p == BENCH or BENCH in p.parents for p in paths)
    return 0 if timing or only_bench else None
