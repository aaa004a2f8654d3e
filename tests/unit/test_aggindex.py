"""The value index (segd.aggindex): kernels against numpy, the index against the scan,
and exactness under every write (appends, late events, upserts, merges, reopen)."""

from __future__ import annotations

from datetime import timedelta

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
from segd.segments.plan import AndNode

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
    # index-first ANDs (AndNode._by_indexes): intersections, per-candidate rest
    "orders_count = 2 and revenue >= 150",
    "orders_count >= 3 and days_since_last_order >= 30 and avg_order_value >= 40",
    "orders_count = 1 and revenue between 20 and 90 and order() in last 90 days",
    "orders_count >= 2 and revenue >= 100 and order() from 2020-01-01",
    "orders_count >= 2 and not revenue >= 200",
    "orders_count >= 2 and revenue >= 100 and not order() in last 30 days",
    "orders_count = 3 and orders_count = 4",
    "orders_count >= 1 and rating >= 3 and age >= 30",
    "revenue >= 10 and (orders_count = 1 or orders_count = 5)",
    "email_open() from 2020-01-01 and orders_count = 1",
    # event leaves decided by the contact's last order / open (pairs._last_seen),
    # and by the kernel for those with a later one
    "orders_count >= 3 and order() from 90 to 30 days ago",
    "orders_count >= 3 and email_open() in last 30 days",
    "orders_count >= 1 and order() count >= 2 in last 90 days",  # not by last seen
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
        mp.setattr(AndNode, "_by_indexes", lambda *a: None)
        return [eng.count(q, now=now, cache=False) for q in QUERIES]


def _check(eng: Engine, now: int) -> None:
    want = _scan_counts(eng, now)
    assert [eng.count(q, now=now, cache=False) for q in QUERIES] == want
    with pytest.MonkeyPatch.context() as mp:  # index-first ANDs at every answer size
        mp.setattr(aggindex, "SORT_SHARE", 1)
        assert [eng.count(q, now=now, cache=False) for q in QUERIES] == want
        # ... and the rest of each AND per candidate (pairs, event leaves included)
        mp.setattr("segd.segments.plan.CANDIDATE_FIRST_SHARE", 2.0)
        assert [eng.count(q, now=now, cache=False) for q in QUERIES] == want


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


@settings(max_examples=300)
@given(
    st.lists(st.integers(0, 499), max_size=120),
    st.lists(st.integers(0, 499), min_size=0, max_size=500, unique=True),
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), max_size=4),
)
def test_intersect_slices_matches_numpy(cur, order, spans) -> None:
    """The ids of `cur` in some slice of `order`, each once, in slice order; the
    scratch bitset is all zero again (ids beyond it are no member)."""
    cur_a = np.array(cur, dtype=np.uint32)
    order_a = np.array(order, dtype=np.uint32)
    spans = [(min(a, b, len(order)), min(max(a, b), len(order))) for a, b in spans]
    starts = np.array([a for a, _ in spans], dtype=np.intp)
    ends = np.array([b for _, b in spans], dtype=np.intp)
    scratch = np.zeros(8, dtype=np.uint64)  # 512 bits: every id of `cur`
    got = kernels.intersect_slices(cur_a, order_a, starts, ends, scratch)
    members, want = set(cur), []
    for a, b in spans:
        for c in order[a:b]:
            if c in members and c not in want:
                want.append(c)
    assert got.dtype == np.uint32
    assert got.tolist() == want
    assert not scratch.any()


def test_intersect_slices_refuses_bad_input() -> None:
    scratch = np.zeros(1, dtype=np.uint64)
    order = np.arange(10, dtype=np.uint32)
    one = np.array([0], dtype=np.intp)
    with pytest.raises(ValueError, match="contact 64 outside"):
        kernels.intersect_slices(np.array([64], np.uint32), order, one, one, scratch)
    with pytest.raises(ValueError, match=r"slice \[0, 11\) outside"):
        kernels.intersect_slices(
            np.array([1], np.uint32), order, one, np.array([11], np.intp), scratch
        )
    with pytest.raises(ValueError, match="differ in length"):
        kernels.intersect_slices(
            np.array([1], np.uint32), order, one, np.zeros(0, np.intp), scratch
        )
    assert not scratch.any()


def test_index_first_and_is_taken_and_exact() -> None:
    """An AND of index answers intersects them natively (and decides the event leaf
    per candidate); the same counts as the column scans (``_check``)."""
    data = generate(2000, seed=3)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    eng.load_events(data.events)
    calls = []
    real = aggindex.intersect
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(aggindex, "SORT_SHARE", 1)  # 2000 contacts: every answer is "large"
        mp.setattr(aggindex, "intersect", lambda *a: calls.append(1) or real(*a))
        eng.count("orders_count >= 2 and revenue >= 100", now=data.now, cache=False)
    assert calls
    _check(eng, data.now)


def _dirty_keys(eng: Engine) -> set[str]:
    return {k for k, d in eng.store.value_index._dirty.items() if len(d)}


def test_writes_mark_only_the_indexes_they_can_change() -> None:
    """A write marks contacts dirty only in the indexes its cause can change: a view
    the visit rollup, an email open its own, an order the order rollups, an upsert the
    attributes, a merge everything; answers stay those of the column scan."""
    data = generate(400, seed=11)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    eng.load_events(data.events)
    now = data.now
    _check(eng, now)  # builds every index
    built = set(eng.store.value_index._built)
    orders = {
        "agg:orders_count",
        "agg:revenue",
        "agg:last_order_s",
        "agg:avg_order_value",
    }
    assert orders | {"agg:last_visit_s", "attr:rating"} <= built
    cid = data.contacts.column("customer_id")[0].as_py()
    steps = [
        (
            {"type": "view", "item_id": data.items.column("item_id")[0].as_py()},
            {"agg:last_visit_s"},
        ),
        ({"type": "email_open"}, {"agg:last_email_open_s"}),
        ({"type": "email_click"}, set()),
        (
            {"type": "order", "amount": 12.5, "order_id": "o-new"},
            orders | {"agg:last_visit_s"},
        ),
    ]
    for k, (event, expected) in enumerate(steps):
        who = data.contacts.column("customer_id")[k + 2].as_py()
        internal = eng.store.contacts.cid_of(who)
        eng.append_events(
            [{"customer_id": who, "ts": now - timedelta(hours=1), **event}]
        )
        marked = {
            key for key, d in eng.store.value_index._dirty.items() if internal in d
        }
        assert marked == expected & built, event["type"]
        _check(eng, now)
    before = _dirty_keys(eng)
    eng.upsert_contacts([{"customer_id": cid, "rating": 2}])
    assert _dirty_keys(eng) - before == {k for k in built if k.startswith("attr:")}
    _check(eng, now)
    other = data.contacts.column("customer_id")[1].as_py()
    eng.merge(cid, other)
    assert _dirty_keys(eng) == set(eng.store.value_index._built)
    _check(eng, now)


@settings(max_examples=40, deadline=None)
@given(
    etype=st.sampled_from(
        [
            "view",
            "order",
            "email_open",
            "email_click",
            "search",
            "add_to_cart",
            "push_open",
            "segment_entered",
            "ad_click",
        ]
    ),
    n=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_arrays_changed_by_covers_what_apply_changes(etype, n, seed) -> None:
    """``Aggregates.arrays_changed_by`` against what ``apply`` really changed: any
    rollup outside its answer must be byte for byte the same after the fold."""
    from segd.aggregates import Aggregates

    rng = np.random.default_rng(seed)
    agg = Aggregates()
    agg.resize(32)
    for name in agg.ARRAYS:
        arr = getattr(agg, name)
        arr[:] = rng.integers(0, 1000, len(arr)).astype(arr.dtype)
    before = {name: getattr(agg, name).copy() for name in agg.ARRAYS}
    cids = rng.integers(0, 32, n).astype(np.uint32)
    ts = rng.integers(0, 2000, n).astype(np.uint32)
    amount = rng.random(n) * 100
    agg.apply(etype, cids, ts, amount, None)
    changed = agg.arrays_changed_by(etype)
    for name in agg.ARRAYS:
        if name not in changed:
            assert np.array_equal(getattr(agg, name), before[name]), (etype, name)
    if "orders_count" not in changed or "revenue" not in changed:
        assert "avg_order_value" not in changed


def test_index_first_and_decides_last_seen_events_by_the_rollup() -> None:
    """The event operands of an index-first AND that the last-seen rollup decides are
    filtered by ``columns.window_split`` (``plan._by_last_seen``), and handed to the
    pair walk when a candidate's latest event is past the window (`now` in the past):
    both ways give the column scans' counts."""
    from segd.segments.event_node import EventNode

    data = generate(2000, seed=4)
    eng = Engine()
    eng.load_items(data.items)
    eng.load_contacts(data.contacts)
    eng.load_events(data.events)
    queries = [
        "orders_count >= 2 and revenue >= 100 and order() in last 90 days",
        "orders_count >= 1 and order() from 120 to 30 days ago",
        "orders_count >= 2 and email_open() in last 60 days and order() in last 365 days",
    ]
    answers: list = []
    real = EventNode.keep_by_last_seen

    def spy(self, ctx, cids):
        got = real(self, ctx, cids)
        answers.append(got)
        return got

    for now in (data.now, data.now - timedelta(days=45)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(conditions.aggindex, "fill", lambda *a, **k: False)
            mp.setattr(conditions.aggindex, "sorted_ids", lambda *a, **k: None)
            mp.setattr(AndNode, "_by_indexes", lambda *a: None)
            want = [eng.count(q, now=now, cache=False) for q in queries]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(aggindex, "SORT_SHARE", 1)  # every answer counts as small
            mp.setattr(EventNode, "keep_by_last_seen", spy)
            assert [eng.count(q, now=now, cache=False) for q in queries] == want
    assert any(a is not None for a in answers)  # decided by the rollup
    assert any(a is None for a in answers)  # a later event: the pair walk decided
