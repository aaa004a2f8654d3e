"""Micro-benchmarks of the reference segment's first-leaf path (issue 15, qref2), on the
shared 100k world, each checked against numpy: an "at least once" event condition over
gathered postings (``order(category in Outdoor...) in last 90 days``) as

- ``eventscan.matching_contacts`` + ``cids_to_bitmap``: the distinct contacts, sorted;
- ``eventscan.count_matches`` + ``bitset_to_bitmap``: the n-bit ``yes`` / ``no``
  bitsets it replaces (the baseline).
"""

from __future__ import annotations

import numpy as np
import pytest

from segd.bench.kernel_world import World, world
from segd.native import eventscan
from segd.native.bitset import (
    bitset_to_bitmap,
    cids_to_bitmap,
    distinct_to_bitmap,
    words_for,
)


@pytest.fixture(scope="module")
def w() -> World:
    return world()


def _gathered(w: World):
    store = w.engine.store
    log = store.logs["order"]
    _, codes = store.catalog.item_filter("category", "in", ["Outdoor"], "bench")
    r0, r1 = log.window(int(w.now_s) - 90 * 86_400, int(w.now_s))
    src = log.postings["item"].gather(codes, r0, r1)
    n = store.n_contacts
    assert len(src) * 4 <= n  # the case EventNode._run sends to matching_contacts
    return log, src, r0, r1, n


def test_matching_contacts(benchmark, w: World) -> None:
    log, src, r0, r1, n = _gathered(w)

    def run():
        scan = eventscan.EventScanParams(log.cid, log.ts, r0, r1, source_rows=src)
        return cids_to_bitmap(eventscan.matching_contacts(scan, n))

    got = benchmark(run)
    assert list(got) == np.unique(log.cid[src]).tolist()


def test_count_matches_to_bitmap_baseline(benchmark, w: World) -> None:
    log, src, r0, r1, n = _gathered(w)
    scratch = eventscan.ScanScratch()
    scratch.ensure(n)
    rule = eventscan.CountRange()

    def run():
        scan = eventscan.EventScanParams(log.cid, log.ts, r0, r1, source_rows=src)
        return bitset_to_bitmap(eventscan.count_matches(scan, rule, scratch, n).yes)

    got = benchmark(run)
    assert list(got) == np.unique(log.cid[src]).tolist()


def test_gather_per_item_baseline(benchmark, w: World) -> None:
    """The first leaf's rows gathered from the per-item postings (one list per
    Outdoor item)."""
    log, src, r0, r1, n = _gathered(w)
    _, codes = w.engine.store.catalog.item_filter("category", "in", ["Outdoor"], "b")
    got = benchmark(lambda: log.postings["item"].gather(codes, r0, r1))
    assert sorted(got.tolist()) == sorted(src.tolist())


def test_gather_per_category(benchmark, w: World) -> None:
    """The same rows from the order log's per-category postings
    (``EventLog.attribute_rows``): a list per Outdoor category."""
    log, src, r0, r1, n = _gathered(w)
    catalog = w.engine.store.catalog
    values = catalog.value_codes("category", "in", ["Outdoor"], "b")
    got = benchmark(lambda: log.attribute_rows(catalog, "category", values, r0, r1))
    assert sorted(got.tolist()) == sorted(src.tolist())


def test_map_codes(benchmark, w: World) -> None:
    """``postings.map_codes``: the order log's item codes -> category codes, the
    per-category postings' build input."""
    from segd.native.postings import map_codes

    store = w.engine.store
    log = store.logs["order"]
    item = np.ascontiguousarray(log.dim("item"))
    table = np.ascontiguousarray(store.catalog.columns["category"].codes)
    got = benchmark(lambda: map_codes(item, table))
    want = np.full(len(item), 0xFFFFFFFF, dtype=np.uint32)
    inside = item < len(table)
    want[inside] = table[item[inside]]
    assert np.array_equal(got, want)


def test_contacts_from_lists(benchmark, w: World) -> None:
    """The first leaf's contacts from the per-category postings' contact lists
    (``EventLog.attribute_cids`` + ``eventscan.distinct_contacts`` + bitmap): no read
    of ``log.cid`` per row, against ``test_matching_contacts``."""
    log, src, r0, r1, n = _gathered(w)
    catalog = w.engine.store.catalog
    values = catalog.value_codes("category", "in", ["Outdoor"], "b")

    def run():
        cids = log.attribute_cids(catalog, "category", values, r0, r1)
        return cids_to_bitmap(eventscan.distinct_contacts(cids, n))

    got = benchmark(run)
    assert list(got) == np.unique(log.cid[src]).tolist()


def test_contacts_from_lists_by_bitset(benchmark, w: World) -> None:
    """``test_contacts_from_lists`` with the contacts de-duplicated in a reusable
    bitset turned straight into the BitMap (``bitset.distinct_to_bitmap``, ref12):
    no radix sort, no sorted array."""
    log, src, r0, r1, n = _gathered(w)
    catalog = w.engine.store.catalog
    values = catalog.value_codes("category", "in", ["Outdoor"], "b")
    scratch = words_for(n)

    def run():
        cids = log.attribute_cids(catalog, "category", values, r0, r1)
        return distinct_to_bitmap(cids, scratch)

    got = benchmark(run)
    assert list(got) == np.unique(log.cid[src]).tolist()
    assert not scratch.any()


@pytest.mark.parametrize("how", ["radix", "bitset"])
def test_distinct_196k_of_10m(benchmark, how: str) -> None:
    """The reference's first leaf at 10M in size: 196,303 row contacts, 118,595
    distinct, out of 10M, as a BitMap: radix sort + ``cids_to_bitmap`` against
    ``distinct_to_bitmap``. Checked against numpy."""
    rng = np.random.default_rng(15)
    people = rng.choice(10_000_000, 118_595, replace=False)
    cids = np.concatenate([people, rng.choice(people, 196_303 - 118_595)])
    cids = cids.astype(np.uint32)
    rng.shuffle(cids)
    scratch = words_for(10_000_000)
    if how == "radix":
        got = benchmark(
            lambda: cids_to_bitmap(eventscan.distinct_contacts(cids, 10_000_000))
        )
    else:
        got = benchmark(lambda: distinct_to_bitmap(cids, scratch))
    assert list(got) == np.unique(cids).tolist()
