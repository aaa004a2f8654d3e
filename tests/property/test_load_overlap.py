"""A bulk load's faster paths against the plain ones (issue 15, `load6`).

``ingest.STAGE_AHEAD`` encodes a chunk's items, dimensions and event ids on the
read-ahead thread while the loading thread encodes the previous chunk's customer ids;
``ingest.PARALLEL_COMMIT`` appends each type's log on a worker thread while the loading
thread folds the rows into the rollups; ``ingest.ADOPT_STAGED_MAPS`` hands an engine
whose contact / item / value map is empty the load's staged map instead of re-adding
its values. The engine after a load must be the same, array for array (codes, columns,
postings, rollups), as with every switch off, on random data: several chunks, known and
new ids, late events into a non-empty log, duplicate event ids; a failing load must
change nothing and keep its row numbers."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segd import Engine, ingest
from segd.errors import InvalidInput
from segd.events import EventLog
from segd.native import NO_CODE

T = 1_735_689_600
TYPES = ["view", "add_to_cart", "order", "open", "click"]


def _table(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 8
    cid, dt, etype, item, channel, amount, event_id, order_id = cols
    return pa.table(
        {
            "customer_id": pa.array(list(cid), pa.string()),
            "ts": pa.array([T + d for d in dt], pa.int64()),
            "type": pa.array(list(etype), pa.string()),
            "item_id": pa.array(list(item), pa.string()),
            "channel": pa.array(list(channel), pa.string()),
            "amount": pa.array(list(amount), pa.float64()),
            "event_id": pa.array(list(event_id), pa.string()),
            "order_id": pa.array(list(order_id), pa.string()),
        }
    )


ROW = st.tuples(
    # short ids (the key index's inline keys) and a few long ones (its fall-through)
    st.sampled_from(
        [f"c{i}" for i in range(15)] + [f"customer-{i:012d}" for i in range(3)]
    ),
    st.integers(0, 50 * 86_400),
    st.sampled_from(TYPES),
    st.one_of(st.none(), st.sampled_from([f"i{i}" for i in range(6)])),
    st.one_of(st.none(), st.sampled_from(["web", "app", "shop"])),
    st.one_of(st.none(), st.floats(0, 1000, allow_nan=False)),
    st.one_of(st.none(), st.sampled_from([f"e{i}" for i in range(30)])),
    st.one_of(st.none(), st.sampled_from([f"o{i}" for i in range(8)])),
)


def _exact(eng: Engine) -> dict:
    """Everything a load changes, as plain values: dictionaries in code order, each
    log's columns and postings, the rollup arrays."""
    store = eng.store
    out: dict = {
        "contacts": store.contacts.ids.to_arrow().to_pylist(),
        "items": store.catalog.ids.to_arrow().to_pylist(),
        "dims": {k: m.to_arrow().to_pylist() for k, m in store.dim_maps.items()},
        "event_ids": store.event_ids.to_arrow().to_pylist(),
        "aggregates": {
            a: getattr(store.aggregates, a)[: len(store.contacts.ids)].tolist()
            for a in store.aggregates.ARRAYS
        },
    }
    for name, log in sorted(store.logs.items()):
        cols: dict = {"cid": log.cid.tolist(), "ts": log.ts.tolist()}
        for d in sorted(log.dims()):
            codes = log.dim(d)
            cols[d] = codes.tolist()
            post = log.postings.get(d)
            if post is not None:
                used = sorted({int(c) for c in codes.tolist() if c != NO_CODE})
                cols[d + ".postings"] = {c: post.rows_of(c).tolist() for c in used}
        if log.amount is not None:
            cols["amount"] = [None if np.isnan(a) else a for a in log.amount.tolist()]
        out["log." + name] = cols
    return out


SWITCHES = (
    "PARALLEL_COMMIT",
    "ADOPT_STAGED_MAPS",
    "READ_AHEAD",
    "STAGE_AHEAD",
    "KEY_INDEX",
    "SPARSE_SPLIT",
    "GROW_AHEAD",
    "NATIVE_AMOUNTS",
)


def _load(table: pa.Table, chunk: int, *, before: pa.Table | None, on: bool):
    for name in SWITCHES:
        setattr(ingest, name, on)
    try:
        eng = Engine()
        if before is not None:
            eng.load_events(before, rows_per_chunk=chunk)
        report = eng.load_events(table, rows_per_chunk=chunk)
    finally:
        for name in SWITCHES:
            setattr(ingest, name, True)
    return eng, report


@settings(max_examples=40, deadline=None)
@given(
    st.lists(ROW, min_size=0, max_size=40),
    st.lists(ROW, min_size=1, max_size=80),
    st.integers(1, 30),
)
def test_fast_paths_equal_the_plain_ones(before_rows, rows, chunk):
    """A first load (or none) and then a second one, whose rows can be older than the
    logs' newest (late events) and repeat event ids of either load."""
    before = _table(before_rows) if before_rows else None
    table = _table(rows)
    one, r1 = _load(table, chunk, before=before, on=False)
    two, r2 = _load(table, chunk, before=before, on=True)
    assert r1.rows == r2.rows
    assert r1.duplicate_events == r2.duplicate_events
    assert _exact(one) == _exact(two)


def test_a_failing_log_append_raises_and_leaves_no_thread(monkeypatch):
    """An exception on the commit worker reaches the caller; the worker has ended."""
    rows = [(f"c{i}", i, TYPES[i % 3], None, None, None, None, None) for i in range(9)]

    def broken(self, *args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(EventLog, "append", broken)
    eng = Engine()
    with pytest.raises(RuntimeError, match="disk on fire"):
        eng.load_events(_table(rows))
    assert not [t for t in threading.enumerate() if t.name.startswith("segd-commit")]


@pytest.mark.parametrize("on", [False, True])
def test_a_bad_row_keeps_its_number_and_changes_nothing(on):
    rows = [(f"c{i}", i, TYPES[i % 5], None, "web", 1.0, None, None) for i in range(50)]
    eng = Engine()
    eng.load_events(_table(rows[:10]), rows_per_chunk=7)
    before = _exact(eng)
    bad = _table(rows).to_pylist()
    bad[33]["customer_id"] = None
    for name in SWITCHES:
        setattr(ingest, name, on)
    try:
        with pytest.raises(InvalidInput) as err:
            eng.load_events(
                pa.Table.from_pylist(bad, _table(rows).schema), rows_per_chunk=7
            )
    finally:
        for name in SWITCHES:
            setattr(ingest, name, True)
    assert err.value.row == 33
    assert _exact(eng) == before


def test_an_empty_engine_takes_the_staged_maps_whole():
    """Into an empty engine the load's customer and item maps become the engine's (the
    same codes as adding them, no second hashing); the engine's map objects stay the
    same objects, and later writes add to them as usual."""
    rows = [
        (f"c{i % 7}", i, TYPES[i % 5], f"i{i % 3}", "web", None, None, None)
        for i in range(40)
    ]
    eng = Engine()
    contacts, items = eng.store.contacts.ids, eng.store.catalog.ids
    eng.load_events(_table(rows), rows_per_chunk=9)
    assert eng.store.contacts.ids is contacts and eng.store.catalog.ids is items
    assert contacts.to_arrow().to_pylist() == [f"c{i}" for i in range(7)]
    assert items.to_arrow().to_pylist() == ["i0", "i1", "i2"]
    assert eng.store.contacts.n == 7 and eng.count("view()") > 0
    eng.append_events(_table([("c99", 5, "view", "i7", None, None, None, None)]))
    assert contacts.lookup_one("c99") == 7 and items.lookup_one("i7") == 3
    assert eng.count("view()") == len({r[0] for r in rows if r[2] == "view"} | {"c99"})


@settings(max_examples=40, deadline=None)
@given(
    st.lists(ROW, min_size=1, max_size=80),
    st.integers(1, 12),
    st.lists(st.booleans(), min_size=1, max_size=12),
)
def test_who_prepares_a_chunk_changes_nothing(rows, chunk, choices):
    """Which thread prepares each chunk (``ingest._prepare_ahead``, decided by timing in
    a real load) is drawn at random here: the engine is the one-thread load's."""
    table = _table(rows)
    one, r1 = _load(table, chunk, before=None, on=False)
    picks = iter(choices * 100)
    original = ingest._prepare_ahead
    ingest._prepare_ahead = lambda backlog: next(picks, True)
    try:
        two, r2 = _load(table, chunk, before=None, on=True)
    finally:
        ingest._prepare_ahead = original
    assert r1.rows == r2.rows
    assert _exact(one) == _exact(two)


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "segd-read-ahead"]


@pytest.mark.parametrize("ahead", [False, True])
@pytest.mark.parametrize("failing_chunk", [0, 3, 6])
def test_a_failing_prepare_stops_the_load_and_its_thread(
    monkeypatch, ahead, failing_chunk
):
    """prepare raising on either thread (here: on the chunk `failing_chunk`) reaches
    the caller, changes nothing, and no read-ahead thread is left waiting."""
    rows = [(f"c{i}", i, TYPES[i % 5], "i1", "web", 1.0, None, None) for i in range(70)]
    eng = Engine()
    eng.load_events(_table(rows[:5]), rows_per_chunk=10)
    before = _exact(eng)
    calls = [0]
    original = ingest.StagedLoad.prepare

    def prepare(self, batch):
        calls[0] += 1
        if calls[0] == failing_chunk + 1:
            raise MemoryError("no room")
        return original(self, batch)

    monkeypatch.setattr(ingest.StagedLoad, "prepare", prepare)
    monkeypatch.setattr(ingest, "_prepare_ahead", lambda backlog: ahead)
    with pytest.raises(MemoryError, match="no room"):
        eng.load_events(_table(rows), rows_per_chunk=10)
    assert _exact(eng) == before
    assert not _reader_threads()


@pytest.mark.parametrize("ahead", [False, True])
def test_a_bad_row_with_chunks_prepared_ahead(monkeypatch, ahead):
    rows = [(f"c{i}", i, TYPES[i % 5], "i1", "web", 1.0, None, None) for i in range(70)]
    bad = _table(rows).to_pylist()
    bad[47]["type"] = None
    monkeypatch.setattr(ingest, "_prepare_ahead", lambda backlog: ahead)
    eng = Engine()
    with pytest.raises(InvalidInput) as err:
        eng.load_events(
            pa.Table.from_pylist(bad, _table(rows).schema), rows_per_chunk=10
        )
    assert err.value.row == 47
    assert not eng.store.logs and len(eng.store.contacts.ids) == 0
    assert not _reader_threads()


SPARSE_ROW = st.tuples(
    st.sampled_from([f"c{i}" for i in range(40)] + ["customer-000000000001"]),
    st.integers(0, 50 * 86_400),
    st.sampled_from(TYPES),
    st.sampled_from([None, "i1", "i2"]),
    # mostly NULL, as order ids, channels and amounts are in real event files
    st.sampled_from([None] * 12 + ["web", "app"]),
    st.sampled_from([None] * 12 + [1.5, 20.0]),
    st.sampled_from([None] * 12 + [f"e{i}" for i in range(4)]),
    st.sampled_from([None] * 12 + [f"o{i}" for i in range(3)]),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(SPARSE_ROW, min_size=1, max_size=300),
    st.sampled_from([8, 64, 72, 128, 1000]),
    st.booleans(),
)
def test_sparse_split_equals_the_plain_one(rows, chunk, dictionary):
    """``SPARSE_SPLIT`` (columns scattered straight to their grouped order, sparse ones
    from their validity bitmap) against every switch off, on mostly-NULL columns, plain
    or dictionary-encoded (as Parquet reads give them), in chunks aligned to whole
    bytes of the bitmap (where the sparse kernels apply) or not."""
    import pyarrow.compute as pc

    table = _table(rows)
    if dictionary:
        table = pa.table(
            {
                c: pc.dictionary_encode(table[c])
                if c != "ts" and c != "amount"
                else table[c]
                for c in table.column_names
            }
        )
    one, r1 = _load(table, chunk, before=None, on=False)
    two, r2 = _load(table, chunk, before=None, on=True)
    assert r1.rows == r2.rows
    assert _exact(one) == _exact(two)
