"""Micro-benchmark of the attribute kernels' candidate paths (issue 15, `med`):
``columns.interval_scan(..., candidates=...)`` over ~0.9% of 1M contacts (8.6k sorted
ids, as ``age >= 35`` after ``order(outdoor) in last 90 days and gender = "m"`` in
``men_outdoor``), with a validity mask; branch-free since `med` (a mispredicted "does
it match?" branch per candidate waited for its cache miss). Checked against numpy.

Run: ``pytest bench/test_bench_candidate_scans.py --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import numpy as np

from segd.native import columns

N = 1_000_000


def test_interval_scan_candidates(benchmark) -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(-(10**12), 10**12, N).astype(np.int64)  # birth dates, ms
    valid = (rng.random(N) < 0.97).astype(np.uint8)
    cand = np.sort(rng.choice(N, 8_587, replace=False)).astype(np.uint32)
    lo, hi = np.array([-np.inf]), np.array([2.0 * 10**11])  # ~60% match
    words = np.zeros((N + 63) // 64, dtype=np.uint64)

    def run():
        words[:] = 0
        columns.interval_scan(values, lo, hi, words, valid=valid, candidates=cand)
        return words

    got = benchmark(run)
    bits = np.unpackbits(got.view(np.uint8), bitorder="little")[:N].astype(bool)
    ok = (values[cand] <= hi[0]) & (valid[cand] != 0)
    want = np.zeros(N, dtype=bool)
    want[cand[ok]] = True
    assert np.array_equal(bits, want)
