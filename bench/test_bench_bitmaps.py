"""Micro-benchmarks: BitMap set operations and posting scans over the 100k world.

Run: ``pytest bench/ --benchmark-only``. Bitmap operands are real segment results (so
their container mix is realistic); posting scans run on the ``view`` log's item index.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyroaring import BitMap

from segd.bench.kernel_world import World, world
from segd.native import eventscan
from segd.segments.context import thread_scratch


@pytest.fixture(scope="module")
def w() -> World:
    return world()


@pytest.fixture(scope="module")
def operands(w: World) -> tuple[BitMap, BitMap]:
    a = w.engine.segment('gender = "m"', w.now_s).bitmap  # ~46%: dense containers
    b = w.engine.segment("view() in last 90 days", w.now_s).bitmap
    return a, b


@pytest.mark.parametrize("op", ["and", "or", "andnot"])
def test_bitmap_binary_op(benchmark, operands, op: str) -> None:
    a, b = operands
    fn = {"and": BitMap.__and__, "or": BitMap.__or__, "andnot": BitMap.__sub__}[op]
    got = benchmark(fn, a, b)
    expected = {
        "and": set(a) & set(b),
        "or": set(a) | set(b),
        "andnot": set(a) - set(b),
    }
    assert len(got) == len(expected[op])


def test_bitmap_union_of_10(benchmark, w: World) -> None:
    parts = [
        w.engine.segment(f'city = "{c}"', w.now_s).bitmap
        for c in ("Moscow", "Kazan", "Omsk", "Perm", "Ufa", "Samara", "Tomsk",
                  "Penza", "Kirov", "Lipetsk")
    ]  # fmt: skip
    got = benchmark(lambda: BitMap.union(*parts))
    assert len(got) == sum(len(p) for p in parts)  # cities are disjoint


@pytest.fixture(scope="module")
def view_index(w: World):
    store = w.engine.store
    log = store.logs["view"]
    mask = store.catalog.item_mask("category", "=", "Electronics", "bench")
    codes = np.flatnonzero(mask).astype(np.uint32)
    r0, r1 = log.window(int(w.now_s) - 90 * 86_400, int(w.now_s))
    return log, log.postings["item"], codes, r0, r1


def test_postings_count_in_window(benchmark, view_index) -> None:
    log, postings, codes, r0, r1 = view_index
    got = benchmark(postings.count_in_window, codes, r0, r1)
    item = log.dim("item")[r0:r1]
    assert got == int(np.isin(item, codes).sum())


def test_postings_gather(benchmark, view_index) -> None:
    log, postings, codes, r0, r1 = view_index
    rows = benchmark(postings.gather, codes, r0, r1)
    item = log.dim("item")[r0:r1]
    assert np.array_equal(np.sort(rows), r0 + np.flatnonzero(np.isin(item, codes)))


def test_eventscan_count_window(benchmark, w: World, view_index) -> None:
    """A full-window scan (no postings): per-contact view counts over 90 days."""
    log, _, _, r0, r1 = view_index
    n = w.engine.store.n_contacts
    scratch = thread_scratch()
    scratch.ensure(n, False)
    rule = eventscan.CountRange(2)

    def scan():
        params = eventscan.EventScanParams(log.cid, log.ts, r0, r1)
        got = eventscan.count_matches(params, rule, scratch, n)
        return int(np.bitwise_count(got.yes).sum())

    got = benchmark(scan)
    counts = np.bincount(log.cid[r0:r1], minlength=n)
    assert got == int((counts >= 2).sum())
