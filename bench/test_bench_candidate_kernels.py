"""Micro-benchmarks of the segment-speed kernels of issue 15 (qspeed), on the shared
100k world, each checked against numpy:

- ``eventscan.count_matches`` of a selective gathered condition (the sort path: the
  matching rows' contacts radix-sorted instead of per-contact counters);
- ``contactindex.rows_of_contacts`` for ~10% of the contacts (prefetched, one pass);
- ``contactindex.count_filtered_of_contacts``: the fused per-candidate count.
"""

from __future__ import annotations

import numpy as np
import pytest

from segd.bench.kernel_world import World, world
from segd.native import contactindex, eventscan


@pytest.fixture(scope="module")
def w() -> World:
    return world()


def _setup(w: World):
    store = w.engine.store
    log = store.logs["view"]
    mask, codes = store.catalog.item_filter("category", "=", "Electronics", "bench")
    r0, r1 = log.window(int(w.now_s) - 60 * 86_400, int(w.now_s))
    n = store.n_contacts
    cands = np.arange(0, n, 10, dtype=np.uint32)
    return store, log, mask, codes, r0, r1, n, cands


def test_count_matches_sorted(benchmark, w: World) -> None:
    store, log, _, _, r0, r1, n, _ = _setup(w)
    _, codes = store.catalog.item_filter("category", "=", "Pets/Cats", "bench")
    src = log.postings["item"].gather(codes, r0, r1)
    assert len(src) * 4 <= n  # the sort path
    scratch = eventscan.ScanScratch()
    scratch.ensure(n)
    rule = eventscan.CountRange(2, 5)

    def run():
        scan = eventscan.EventScanParams(log.cid, log.ts, r0, r1, source_rows=src)
        return eventscan.count_matches(scan, rule, scratch, n)

    got = benchmark(run)
    cnt = np.bincount(log.cid[src], minlength=n)
    yes = np.unpackbits(got.yes.view(np.uint8), bitorder="little")[:n]
    assert np.array_equal(np.flatnonzero(yes), np.flatnonzero((cnt >= 2) & (cnt <= 5)))


def test_rows_of_contacts(benchmark, w: World) -> None:
    store, log, _, _, r0, r1, n, cands = _setup(w)
    slots, rows, limit = log.contact_index(n)
    got = benchmark(
        lambda: contactindex.rows_of_contacts(cands, slots, rows, limit, r0, r1)
    )
    cid = log.cid[r0:r1]
    want = np.flatnonzero(np.isin(cid, cands)) + r0
    assert np.array_equal(np.sort(got[got < limit]), want[want < limit])


def test_count_filtered_of_contacts(benchmark, w: World) -> None:
    store, log, mask, _, r0, r1, n, cands = _setup(w)
    slots, rows, limit = log.contact_index(n)
    item = log.dim("item")
    got = benchmark(
        lambda: contactindex.count_filtered_of_contacts(
            cands, slots, rows, limit, log.cid, r0, r1, [(item, mask)]
        )
    )
    codes = item[r0:r1]
    ok = (codes < len(mask)) & (mask[np.minimum(codes, len(mask) - 1)] == 1)
    want = np.bincount(log.cid[r0:r1][ok], minlength=n)[cands]
    assert np.array_equal(got, want)


def test_gather_category_subtree_orders(benchmark, w: World) -> None:
    """The reference segment's first leaf (issue 15, qref): the order rows of 90 days of
    a whole top category, i.e. thousands of item codes with a few rows each (one pass,
    bounds galloped from each list's end, list tails prefetched)."""
    store = w.engine.store
    log = store.logs["order"]
    _, codes = store.catalog.item_filter("category", "=", "Outdoor", "bench")
    r0, r1 = log.window(int(w.now_s) - 90 * 86_400, int(w.now_s))
    postings = log.postings["item"]
    rows = benchmark(postings.gather, codes, r0, r1)
    item = log.dim("item")[r0:r1]
    want = r0 + np.flatnonzero(np.isin(item, codes))
    assert len(codes) > 100
    assert np.array_equal(np.sort(rows), want)
