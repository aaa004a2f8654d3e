"""Aggregate thresholds at 1M contacts: column scan vs sorted-permutation index vs a
bit-sliced index (O'Neil's algorithm over 32 roaring slices, as FeatureBase / Pilosa do).

Run: ``pytest bench/test_bench_aggindex.py --benchmark-only -p no:cacheprovider``.
Each candidate produces the same roaring bitmap of matching contacts (checked against a
plain numpy oracle); segd.aggindex keeps the sorted permutation (see BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from pyroaring import BitMap

from segd.aggindex import SortedIndex
from segd.native import aggindex as kernels
from segd.native import columns as scan
from segd.native.bitset import bitset_to_bitmap, cids_to_bitmap

N = 1_000_000
NOW = 1_750_000_000
DAY = 86_400


def _columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    orders = rng.geometric(0.45, N).astype(np.uint32) - 1  # ~55% never ordered
    revenue = np.where(orders > 0, rng.lognormal(4.5, 1.0, N) * orders, 0)
    age_days = rng.integers(0, 730, N)
    last = np.where(orders > 0, NOW - age_days * DAY, 0).astype(np.uint32)
    return {
        "orders_count": orders,
        "revenue_cents": np.round(revenue * 100).astype(np.uint32),
        "last_order_s": last,
    }


# (id, column, closed intervals [lo, hi])
CASES = [
    ("orders_count_eq_4", "orders_count", [(4, 4)]),
    ("revenue_ge_1000", "revenue_cents", [(100_000, np.inf)]),
    (
        "days_since_last_order_52_112",
        "last_order_s",
        [(NOW - 113 * DAY + 1, NOW - 52 * DAY)],
    ),
    ("orders_count_ge_1_broad", "orders_count", [(1, np.inf)]),
    ("orders_count_ge_10_rare", "orders_count", [(10, np.inf)]),  # ~0.25%
]


class BitSliced:
    """Bit-sliced index: existence bitmap + one roaring bitmap per value bit."""

    def __init__(self, values: np.ndarray) -> None:
        self.exists = BitMap(np.arange(len(values), dtype=np.uint32))
        self.slices = [
            BitMap(np.flatnonzero((values >> np.uint32(b)) & 1).astype(np.uint32))
            for b in range(32)
        ]

    def _cmp(self, c: int, greater: bool) -> BitMap:
        """>= c (greater) or <= c, O'Neil's comparison from the top slice down."""
        if c < 0:
            return self.exists.copy() if greater else BitMap()
        if c >= 1 << 32:
            return BitMap() if greater else self.exists.copy()
        strict, eq = BitMap(), self.exists.copy()
        for b in range(31, -1, -1):
            s = self.slices[b]
            if (c >> b) & 1:
                if not greater:
                    strict |= eq - s
                eq &= s
            else:
                if greater:
                    strict |= eq & s
                eq -= s
        return strict | eq

    def query(self, lo: float, hi: float) -> BitMap:
        ge = self._cmp(int(np.ceil(lo)), True) if lo > -np.inf else self.exists
        if hi == np.inf:
            return ge
        return ge & self._cmp(int(np.floor(hi)), False)


@pytest.fixture(scope="module")
def world():
    cols = _columns()
    return {
        name: (v, SortedIndex.build(None, v, None), BitSliced(v))
        for name, v in cols.items()
    }


def _oracle(values: np.ndarray, iv) -> BitMap:
    f = values.astype(np.float64)
    hit = np.zeros(len(values), bool)
    for lo, hi in iv:
        hit |= (f >= lo) & (f <= hi)
    return BitMap(np.flatnonzero(hit).astype(np.uint32))


def run_scan(values, iv) -> BitMap:
    words = np.zeros((len(values) + 63) // 64, dtype=np.uint64)
    lo, hi = (np.array([x[i] for x in iv], np.float64) for i in (0, 1))
    scan.interval_scan(values, lo, hi, words)
    return bitset_to_bitmap(words)


def run_sorted(index: SortedIndex, iv) -> BitMap:
    words = np.zeros((index.n + 63) // 64, dtype=np.uint64)
    lo, hi = (np.array([x[i] for x in iv], np.float64) for i in (0, 1))
    for a, b in index.slices(lo, hi):
        kernels.mark_ids(index.order[a:b], words)
    return bitset_to_bitmap(words)


def run_sorted_ids(index: SortedIndex, iv) -> BitMap:
    """The slice's ids sorted into a BitMap, no bitset of the base (segd.aggindex
    ``sorted_ids``, taken for answers of at most n / SORT_SHARE contacts)."""
    lo, hi = (np.array([x[i] for x in iv], np.float64) for i in (0, 1))
    parts = [index.order[a:b] for a, b in index.slices(lo, hi)]
    if not parts:
        return BitMap()
    return cids_to_bitmap(np.sort(np.concatenate(parts)))


def run_bsi(bsi: BitSliced, iv) -> BitMap:
    parts = [bsi.query(lo, hi) for lo, hi in iv]
    return BitMap.union(*parts) if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("method", ["scan", "sorted", "sorted_ids", "bsi"])
@pytest.mark.parametrize(
    "column, iv", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_aggregate_threshold(benchmark, world, method, column, iv) -> None:
    values, index, bsi = world[column]
    run = {
        "scan": lambda: run_scan(values, iv),
        "sorted": lambda: run_sorted(index, iv),
        "sorted_ids": lambda: run_sorted_ids(index, iv),
        "bsi": lambda: run_bsi(bsi, iv),
    }[method]
    got = benchmark(run)
    assert got == _oracle(values, iv)
    benchmark.extra_info["matches"] = len(got)


# An AND of two answers (four_orders' orders_count = 4 and revenue >= 1000): each
# sorted into a roaring bitmap and intersected, against segd.aggindex.intersect
# (the first answer marked in a scratch bitset, the second's slice probing it, the
# few hits sorted once).
AND_CASE = (("orders_count", [(4, 4)]), ("revenue_cents", [(100_000, np.inf)]))


def _spans(index: SortedIndex, iv) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = (np.array([x[i] for x in iv], np.float64) for i in (0, 1))
    got = index.slices(lo, hi)
    return (
        np.array([a for a, _ in got], dtype=np.intp),
        np.array([b for _, b in got], dtype=np.intp),
    )


@pytest.mark.parametrize("method", ["sorted_ids_and", "intersect_slices"])
def test_and_of_two_answers(benchmark, world, method) -> None:
    (c1, iv1), (c2, iv2) = AND_CASE
    (v1, i1, _), (v2, i2, _) = world[c1], world[c2]
    (s1, e1), (s2, e2) = _spans(i1, iv1), _spans(i2, iv2)
    scratch = np.zeros(N // 64 + 1, dtype=np.uint64)

    def by_bitmaps() -> BitMap:
        return run_sorted_ids(i1, iv1) & run_sorted_ids(i2, iv2)

    def by_intersect() -> BitMap:
        first = np.concatenate([i1.order[a:b] for a, b in zip(s1, e1, strict=True)])
        hits = kernels.intersect_slices(first, i2.order, s2, e2, scratch)
        return cids_to_bitmap(np.sort(hits))

    run = by_bitmaps if method == "sorted_ids_and" else by_intersect
    got = benchmark(run)
    assert got == _oracle(v1, iv1) & _oracle(v2, iv2)
    assert not scratch.any()
    benchmark.extra_info["matches"] = len(got)
