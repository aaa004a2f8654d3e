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


def _last_order_case():
    """`searched_no_order`'s second step: 9,163 sorted candidates of 1M, their latest
    order second (~10% of contacts ordered in the last 30 days), [now - 30d, now)."""
    rng = np.random.default_rng(5)
    now = 1_760_000_000
    last = np.where(
        rng.random(N) < 0.6, rng.integers(now - 400 * 86_400, now, N), 0
    ).astype(np.uint32)
    cand = np.sort(rng.choice(N, 9_163, replace=False)).astype(np.uint32)
    return last, cand, now - 30 * 86_400, now


def test_window_split_candidates(benchmark) -> None:
    """One branch-free pass (`columns.window_split`, `med2`)."""
    last, cand, lo, hi = _last_order_case()
    inside, later = benchmark(columns.window_split, last, cand, lo, hi)
    seen = last[cand]
    assert inside.tolist() == cand[(seen >= lo) & (seen < hi)].tolist()
    assert later.tolist() == np.flatnonzero(seen >= hi).tolist()


def test_window_split_numpy(benchmark) -> None:
    """The numpy steps it replaced (take, two compares, flatnonzero, a selection)."""
    last, cand, lo, hi = _last_order_case()

    def run():
        seen = last.take(cand)
        got = (seen >= lo) & (seen < hi)
        later = np.flatnonzero(seen >= hi)
        return np.ascontiguousarray(cand[got]), later

    inside, _ = benchmark(run)
    assert inside.tolist() == columns.window_split(last, cand, lo, hi)[0].tolist()
