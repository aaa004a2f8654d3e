"""Micro-benchmarks: the contact-major copy of the view log's item codes (issue 15).

``view(brand = "Nike") count >= 2 in last 30 days`` decided for 5k random contacts of the
shared 100k world by ``pairscan.event_pairs``, with the brand filter read from the copy
(``EventLog.contact_codes``: a candidate's codes lie beside its rows) and from the log's
item column by row number (a cache miss per row once the log outgrows the cache); and
``contactindex.codes_by_contact``, the copy's build (once per rebuild of the contact
index). Each checks its answer against the other path / numpy.
Run: ``pytest bench/test_bench_contact_codes.py --benchmark-only``.
"""

from __future__ import annotations

import numpy as np
import pytest

from segd.bench.kernel_world import World, world
from segd.native import contactindex, pairscan
from segd.segments import pairs as P

CANDIDATES = 5_000
DAY = 86_400


@pytest.fixture(scope="module")
def w() -> World:
    return world()


def _source(w: World, by_contact: bool):
    store = w.engine.store
    log = store.logs["view"]
    item_mask, _ = store.catalog.item_filter("brand", "=", "Nike", "$")
    mask = np.ascontiguousarray(item_mask, np.uint8)
    view = P._pair_log(log, store.n_contacts)
    copy = log.contact_codes("item") if by_contact else None
    assert not by_contact or copy is not None
    return pairscan.PairSource(view, code_filters=[(log.dim("item"), mask, copy)])


@pytest.mark.parametrize("path", ["by_contact", "by_row"])
def test_event_pairs_brand(benchmark, w: World, path: str) -> None:
    rng = np.random.default_rng(3)
    n = w.engine.store.n_contacts
    cids = np.sort(rng.choice(n, CANDIDATES, replace=False)).astype(np.uint32)
    lo = np.full(CANDIDATES, int(w.now_s) - 30 * DAY, np.int64)
    hi = np.full(CANDIDATES, int(w.now_s), np.int64)
    src = _source(w, path == "by_contact")
    got = benchmark(lambda: pairscan.event_pairs(src, cids, lo, hi, 2))
    other = pairscan.event_pairs(_source(w, path != "by_contact"), cids, lo, hi, 2)
    assert got.tolist() == other.tolist()


def test_codes_by_contact(benchmark, w: World) -> None:
    log = w.engine.store.logs["view"]
    slots, rows, limit = log.contact_index(w.engine.store.n_contacts)
    item = log.dim("item")
    got = benchmark(lambda: contactindex.codes_by_contact(item, rows, len(rows)))
    assert np.array_equal(got, item[rows])
