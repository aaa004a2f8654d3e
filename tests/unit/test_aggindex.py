"""The value index (segd.aggindex): kernels against numpy, the index against the scan,
and exactness under every write (appends, late events, upserts, merges, reopen)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

import segd.segments.conditions as conditions
from segd import Engine, aggindex
from segd.aggindex import SortedIndex
from segd.datagen import generate
from segd.native import aggindex as kernels
from segd.segments.context import Context

QUERIES = [
    "orders_count = 2",
    "orders_count >= 3",
    "revenue >= 300",
    "revenue between 50 and 120.5",
    "avg_order_value > 60",
    "avg_order_value is null",
    "days_since_last_order between 20 and 200",
    "days_since_last_visit <= 30",
    "days_since_last_email_open > 10",
    "days_since_last_order is not null",
    "rating >= 4",
    "age between 20 and 35",
    "orders_count = 1 and rating >= 3",
]


def _bits(words: np.ndarray, n: int) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")[:n])


@given(st.lists(st.integers(0, 999), max_size=300), st.integers(0, 1))
def test_mark_and_clear_match_numpy(ids, clear) -> None:
    arr = np.array(ids, dtype=np.uint32)
    words = np.zeros(16, dtype=np.uint64)
    kernels.mark_ids(arr, words)
    assert _bits(words, 1024).tolist() == sorted(set(ids))
    if clear:
        kernels.clear_ids(np.ascontiguousarray(arr[::2]), words)
        assert _bits(words, 1024).tolist() == sorted(set(ids) - set(ids[::2]))


def test_kernels_refuse_ids_outside_the_bitset() -> None:
    words = np.zeros(2, dtype=np.uint64)
    with pytest.raises(ValueError, match="contact 128 outside"):
        kernels.mark_ids(np.array([3, 128], dtype=np.uint32), words)
    assert not words.any()  # nothing changed
    with pytest.raises(ValueError, match="outside"):
        kernels.clear_ids(np.array([200], dtype=np.uint32), words)


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(st.floats(-1e6, 1e6), st.just(float("nan")), st.integers(0, 9)),
        max_size=200,
    ),
    st.lists(st.booleans(), min_size=200, max_size=200),
    st.floats(-1e6, 1e6),
    st.floats(0, 2e6),
)
def test_sorted_index_matches_numpy(values, valid, lo, width) -> None:
    v = np.array(values, dtype=np.float64)
    present = np.array(valid[: len(v)], dtype=np.uint8)
    idx = SortedIndex.build(None, v, present)
    lo_a, hi_a = np.array([lo, lo + width + 5]), np.array([lo + width, np.inf])
    words = np.zeros(4, dtype=np.uint64)
    for a, b in idx.slices(lo_a, hi_a):
        kernels.mark_ids(idx.order[a:b], words)
    with np.errstate(invalid="ignore"):
        want = present.astype(bool) & (
            ((v >= lo_a[0]) & (v <= hi_a[0])) | ((v >= lo_a[1]) & (v <= hi_a[1]))
        )
    assert _bits(words, len(v)).tolist() == np.flatnonzero(want).tolist()


def _scan_counts(eng: Engine, now: int) -> list[int]:
    """The oracle: every query by the column scan, the index switched off."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conditions.aggindex, "fill", lambda *a, **k: False)
        mp.setattr(conditions.aggindex, "sorted_ids", lambda *a, **k: None)
        return [eng.count(q, now=now, cache=False) for q in QUERIES]


def _check(eng: Engine, now: int) -> None:
    got = [eng.count(q, now=now, cache=False) for q in QUERIES]
    assert got == _scan_counts(eng, now)


def test_index_stays_exact_under_writes(tmp_path) -> None:
    data = generate(600, seed=5)
    eng = Engine.open(tmp_path / "d", fsync="off")
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    half = data.events.num_rows // 2
    eng.load_events(data.events.slice(half))
    now = data.now
    _check(eng, now)
    builds = eng.store.value_index.builds
    assert builds >= 8  # one per indexed column, built on first use
    # Late events (older half) in small batches: patched by dirty contacts, no rebuild.
    for start in range(0, 300, 100):
        eng.append_events(data.events.slice(start, 100))
        _check(eng, now)
    # New contacts, attribute changes, an identity merge.
    eng.upsert_contacts([{"customer_id": "new-1", "rating": 5}])
    some = data.contacts.column("customer_id").to_pylist()[:3]
    eng.upsert_contacts([{"customer_id": some[0], "rating": 1}])
    _check(eng, now)
    eng.merge(some[1], some[2])
    _check(eng, now)
    assert eng.store.value_index.builds == builds  # all of it patched, not rebuilt
    # A bulk write drops the indexes; the next query rebuilds them, still exact.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aggindex, "MIN_DIRTY", 16)  # as a bulk write at 1M contacts
        eng.append_events(data.events.slice(300, half - 300))
        _check(eng, now)
    assert eng.store.value_index.builds > builds
    counts = [eng.count(q, now=now, cache=False) for q in QUERIES]
    eng.close()
    # Reopen (replay of the log): indexes are rebuilt, not persisted.
    eng = Engine.open(tmp_path / "d", fsync="off")
    assert [eng.count(q, now=now, cache=False) for q in QUERIES] == counts
    _check(eng, now)
    eng.close()


def test_small_candidate_sets_use_the_per_contact_check() -> None:
    data = generate(300, seed=9)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    eng.load_events(data.events)
    calls = []
    real = conditions.aggindex.fill
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            conditions.aggindex,
            "fill",
            lambda *a, **k: calls.append(a[1]) or real(*a, **k),
        )
        eng.count("orders_count >= 1", now=data.now, cache=False)
        assert calls == ["agg:orders_count"]
    # A few candidates (a live segment's touched contacts, a narrowed AND): the
    # per-contact check decides them; the index is not asked.
    ctx = Context(eng.store, data.now)
    assert (
        conditions._indexed(ctx, BitMap([1, 2]), "k", None, None, [], [], None) is None
    )


def test_memory_counts_the_built_indexes() -> None:
    data = generate(600, seed=7)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    eng.load_events(data.events)
    assert eng.store.memory()["value_indexes"] == 0  # nothing built before a query
    for q in QUERIES:
        eng.count(q, now=data.now, cache=False)
    built = eng.store.value_index._built
    expected = sum(i.values.nbytes + i.order.nbytes for i in built.values())
    assert expected > 0
    mem = eng.store.memory()
    assert mem["value_indexes"] >= expected
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")
    assert eng.stats()["memory_bytes"]["value_indexes"] == mem["value_indexes"]
