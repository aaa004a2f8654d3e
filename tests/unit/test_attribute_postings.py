"""Per-value postings of an item attribute (``events.ATTRIBUTE_POSTINGS``, issue 15):
the ``postings.map_codes`` kernel against numpy, the cache's exactness rules (catalog
changes, late merges, tail appends) and its memory accounting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd import Engine, events
from segd.native import NO_CODE, eventscan
from segd.native.postings import Postings, map_codes

BASE = 1_760_000_000
DAY = 86_400

codes_st = st.lists(
    st.one_of(st.integers(0, 40), st.just(NO_CODE), st.integers(0, 2**32 - 1)),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(codes=codes_st, table=st.lists(st.integers(0, 2**32 - 1), max_size=30))
def test_map_codes_matches_numpy(codes, table) -> None:
    c = np.array(codes, dtype=np.uint32)
    t = np.array(table, dtype=np.uint32)
    got = map_codes(c, t)
    inside = c < len(t)
    want = np.full(len(c), NO_CODE, dtype=np.uint32)
    want[inside] = t[c[inside]]
    assert got.dtype == np.uint32
    assert got.tolist() == want.tolist()


@settings(max_examples=200, deadline=None)
@given(cids=st.lists(st.integers(0, 5_000), max_size=300))
def test_distinct_contacts_matches_numpy(cids) -> None:
    c = np.array(cids, dtype=np.uint32)
    got = eventscan.distinct_contacts(c, 5_001)
    assert got.dtype == np.uint32
    assert got.tolist() == np.unique(c).tolist()
    if len(c):
        with pytest.raises(ValueError, match="contact"):
            eventscan.distinct_contacts(c, int(c.max()))


@settings(max_examples=200, deadline=None)
@given(
    codes=st.lists(st.integers(0, 6), max_size=120),
    ask=st.lists(st.integers(0, 9), max_size=5),
    window=st.tuples(st.integers(0, 130), st.integers(0, 130)),
    seed=st.integers(0, 2**31),
)
def test_gather_parallel_matches_numpy(codes, ask, window, seed) -> None:
    """Values kept beside each code's rows come back for exactly the rows ``gather``
    returns (same order)."""
    c = np.array(codes, dtype=np.uint32)
    rows = np.arange(len(c), dtype=np.uint32)
    vals = np.random.default_rng(seed).integers(0, 2**32, len(c), dtype=np.uint64)
    vals = vals.astype(np.uint32)
    p, v = Postings(), Postings()
    p.append_rows(rows, c)
    v.append_rows(vals, c)
    want_codes = np.unique(np.array(ask, dtype=np.uint32))
    r0, r1 = window
    got = p.gather_parallel(v, want_codes, r0, r1)
    got_rows = p.gather(want_codes, r0, r1)
    assert got.tolist() == vals[got_rows].tolist()
    sel = np.isin(c, want_codes) & (rows >= r0) & (rows < r1)
    assert sorted(got_rows.tolist()) == np.flatnonzero(sel).tolist()


def test_gather_parallel_checks_lengths() -> None:
    p, v = Postings(), Postings()
    p.append_rows(np.arange(3, dtype=np.uint32), np.zeros(3, np.uint32))
    v.append_rows(np.arange(2, dtype=np.uint32), np.zeros(2, np.uint32))
    with pytest.raises(ValueError, match="length differs"):
        p.gather_parallel(v, np.zeros(1, np.uint32), 0, 3)


def _oracle(e: Engine, values: np.ndarray, r0: int, r1: int) -> list[int]:
    """Rows in [r0, r1) of the order log whose item's category code is in `values`."""
    log = e.store.logs["order"]
    cat = e.store.catalog.columns["category"].codes[: len(e.store.catalog)]
    item = log.dim("item")[r0:r1]
    inside = item < len(cat)
    codes = np.full(len(item), NO_CODE, dtype=np.uint32)
    codes[inside] = cat[item[inside]]
    return (np.flatnonzero(np.isin(codes, values)) + r0).tolist()


def _rows(e: Engine, values, r0=0, r1=None) -> list[int]:
    log = e.store.logs["order"]
    r1 = log.n if r1 is None else r1
    got = log.attribute_rows(e.store.catalog, "category", values, r0, r1)
    assert got is not None
    return sorted(got.tolist())


def _engine() -> Engine:
    e = Engine(result_cache_size=0)
    e.upsert_items(
        [{"item_id": f"i{i}", "category": f"k{i % 3}", "price": 1.0} for i in range(6)]
    )
    e.upsert_contacts([{"customer_id": f"c{i}"} for i in range(4)])
    e.append_events(
        [
            {
                "customer_id": f"c{i % 4}",
                "type": "order",
                "ts": BASE + 60 * i,
                "item_id": f"i{i % 6}",
                "amount": 1.0,
            }
            for i in range(60)
        ]
    )
    return e


def _values(e: Engine, *names: str) -> np.ndarray:
    got = e.store.catalog.value_codes("category", "in", list(names), "t")
    assert got is not None
    return got


def test_rows_equal_the_item_mask_through_writes() -> None:
    e = _engine()
    log = e.store.logs["order"]
    k0 = _values(e, "k0")
    assert _rows(e, k0) == _oracle(e, k0, 0, log.n)
    assert _rows(e, k0, 10, 30) == _oracle(e, k0, 10, 30)
    # a tail append is added to the lists, no rebuild
    built = log._attr["category"].postings
    e.append_events(
        [{"customer_id": "c1", "type": "order", "ts": BASE + 9_000, "item_id": "i0"}]
    )
    assert _rows(e, k0) == _oracle(e, k0, 0, log.n)
    assert log._attr["category"].postings is built
    # a late event moves rows: rebuilt
    e.append_events(
        [{"customer_id": "c2", "type": "order", "ts": BASE + 30, "item_id": "i3"}]
    )
    assert _rows(e, k0) == _oracle(e, k0, 0, log.n)
    assert log._attr["category"].postings is not built
    built = log._attr["category"].postings
    # a new item (no rows yet) and a category given to it: nothing to rebuild
    e.upsert_items([{"item_id": "new", "category": "k9"}])
    e.upsert_items([{"item_id": "new", "category": "k0"}])
    k0 = _values(e, "k0")
    assert _rows(e, k0) == _oracle(e, k0, 0, log.n)
    assert log._attr["category"].postings is built
    e.append_events(
        [{"customer_id": "c3", "type": "order", "ts": BASE + 9_100, "item_id": "new"}]
    )
    assert _rows(e, k0) == _oracle(e, k0, 0, log.n)
    # an item with rows moves to another category: rebuilt, rows follow it
    e.upsert_items([{"item_id": "i1", "category": "k0"}])
    k0 = _values(e, "k0")
    assert _rows(e, k0) == _oracle(e, k0, 0, log.n)
    assert log._attr["category"].postings is not built
    # an identity merge changes contacts, not rows: the contact lists follow
    e.merge("c0", "c1")
    assert _rows(e, k0) == _oracle(e, k0, 0, log.n)
    rows = log.attribute_rows(e.store.catalog, "category", k0, 0, log.n)
    cids = log.attribute_cids(e.store.catalog, "category", k0, 0, log.n)
    assert cids.tolist() == log.cid[rows].tolist()


def test_bytes_and_types() -> None:
    """4 B per order line with a category (+4 B per catalog item) in ``index_nbytes``;
    types not configured keep none and answer None."""
    e = _engine()
    log = e.store.logs["order"]
    before = log.index_nbytes()
    log.build_attribute_postings(e.store.catalog)
    attr = log._attr["category"]
    assert attr.postings is not None and attr.postings.postings == log.n
    assert log.index_nbytes() - before == attr.nbytes() >= 4 * log.n
    e.append_events(
        [{"customer_id": "c1", "type": "view", "ts": BASE, "item_id": "i0"}]
    )
    view = e.store.logs["view"]
    assert not view.has_attribute_postings("category")
    k0 = _values(e, "k0")
    assert view.attribute_rows(e.store.catalog, "category", k0, 0, view.n) is None
    assert e.store.catalog.value_codes("price", ">", 1, "t") is None


def test_segments_same_with_and_without(monkeypatch) -> None:
    from segd.segments import event_node

    # every "at least once" category condition takes the contact-list path
    monkeypatch.setattr(event_node, "SORT_RATIO", 0)
    e = _engine()
    now = BASE + 2 * DAY
    qs = [
        'order(category = "k0") in last 30 days',
        'order(category in ("k1", "k2")) count >= 3 in last 30 days',
        'not order(category != "k1") in last 30 days',
    ]
    try:
        events.READ_ATTRIBUTE_POSTINGS = True
        fast = [sorted(e.segment(q, now=now, cache=False).ids()) for q in qs]
        events.READ_ATTRIBUTE_POSTINGS = False
        plain = [sorted(e.segment(q, now=now, cache=False).ids()) for q in qs]
    finally:
        events.READ_ATTRIBUTE_POSTINGS = True
    assert fast == plain
    assert any(fast)
