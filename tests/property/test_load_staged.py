"""A bulk load reads its source once and stages it against its own dictionaries
(``ingest.StagedLoad``): the engine after it must equal the engine after appending the
same chunks one by one (the old apply path, kept by ``append_events``), and a load that
fails anywhere must leave the engine exactly as it was."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from segd import Engine
from segd.errors import InvalidInput
from segd.native import NO_CODE

T = 1_735_689_600
TYPES = ["view", "add_to_cart", "order"]


def _table(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 7
    cid, dt, etype, item, channel, amount, event_id = cols
    return pa.table(
        {
            "customer_id": pa.array(list(cid), pa.string()),
            "ts": pa.array([T + d for d in dt], pa.int64()),
            "type": pa.array(list(etype), pa.string()),
            "item_id": pa.array(list(item), pa.string()),
            "channel": pa.array(list(channel), pa.string()),
            "amount": pa.array(list(amount), pa.float64()),
            "event_id": pa.array(list(event_id), pa.string()),
        }
    )


ROW = st.tuples(
    st.sampled_from([f"c{i}" for i in range(12)]),
    st.integers(0, 50 * 86_400),
    st.sampled_from(TYPES),
    st.one_of(st.none(), st.sampled_from([f"i{i}" for i in range(6)])),
    st.one_of(st.none(), st.sampled_from(["web", "app", "shop"])),
    st.one_of(st.none(), st.floats(0, 1000, allow_nan=False)),
    st.one_of(st.none(), st.sampled_from([f"e{i}" for i in range(20)])),
)


def _before(eng: Engine) -> None:
    """Contacts, items, values and event ids the engine knows before the load, and a
    merged id (rows naming it belong to its survivor)."""
    eng.append_events(
        _table(
            [
                ("c3", 1, "view", "i2", "app", None, "e1"),
                ("c7", 2, "order", None, None, 5.0, "e2"),
                ("c5", 3, "view", "i9", "tv", None, None),
            ]
        )
    )
    eng.merge("c3", "c5")


def _state(eng: Engine) -> dict:
    """The engine's contents by value (codes decoded). New contacts, items and values
    are compared as sets: when rows are dropped for event ids seen before the load, the
    staged load numbers them in order of first use among all of the load's rows."""
    store = eng.store
    logs = {}
    for name, log in store.logs.items():
        cols = [store.contacts.ids.decode(log.cid.astype(np.uint32)).to_pylist()]
        cols.append(log.ts.tolist())
        for d in sorted(log.dims()):
            m = store.catalog.ids if d == "item" else store.dim_maps[d]
            codes = log.dim(d)
            cols.append(
                [None if c == NO_CODE else m.decode_one(c) for c in codes.tolist()]
            )
        if log.amount is not None:
            cols.append([-1.0 if np.isnan(a) else a for a in log.amount.tolist()])
        logs[name] = sorted(zip(*cols, strict=True), key=repr)
    return {
        "contacts": sorted(store.contacts.ids.to_arrow().to_pylist()),
        "items": sorted(store.catalog.ids.to_arrow().to_pylist()),
        "dims": {
            k: sorted(m.to_arrow().to_pylist()) for k, m in store.dim_maps.items()
        },
        "event_ids": sorted(store.event_ids.to_arrow().to_pylist()),
        "logs": logs,
        "counts": {
            q: eng.count(q, now=T + 60 * 86_400)
            for q in [
                "view()",
                "order() count >= 2",
                "orders_count >= 1",
                "revenue > 10",
            ]
        },
    }


@settings(max_examples=40, deadline=None)
@given(st.lists(ROW, min_size=1, max_size=60), st.integers(1, 25))
@example(  # the only amount of a type is on a row dropped for an event id seen before
    [
        ("c0", 0, "view", None, None, None, None),
        ("c0", 0, "view", None, None, 0.0, "e1"),
    ],
    2,
)
def test_staged_load_equals_chunk_by_chunk_appends(rows, chunk):
    table = _table(rows)
    loaded, appended = Engine(), Engine()
    _before(loaded)
    _before(appended)
    report = loaded.load_events(table, rows_per_chunk=chunk)
    kept = 0
    for first in range(0, len(rows), chunk):
        kept += appended.append_events(table.slice(first, chunk)).rows
    assert report.rows == kept
    assert _state(loaded) == _state(appended)
    if not any(r[6] in ("e1", "e2") for r in rows):  # nothing dropped: same numbering
        assert (
            loaded.store.contacts.ids.to_arrow()
            == appended.store.contacts.ids.to_arrow()
        )
        for name, m in loaded.store.dim_maps.items():
            assert m.to_arrow() == appended.store.dim_maps[name].to_arrow()


def _dictionary_encoded(table: pa.Table) -> pa.Table:
    """The text columns dictionary-encoded: Parquet keeps the Arrow type, and such a
    file's text columns are read by segd.pqdict instead of Arrow's reader."""
    return pa.table(
        {
            name: col.dictionary_encode() if pa.types.is_string(col.type) else col
            for name, col in zip(table.column_names, table.columns, strict=True)
        }
    )


@pytest.fixture
def _every_dictionary(monkeypatch):
    """segd.pqdict reads every dictionary column, however small its dictionary page."""
    from segd import pqdict

    monkeypatch.setattr(pqdict, "MIN_DICTIONARY_BYTES", 0)


@pytest.mark.usefixtures("_every_dictionary")
@pytest.mark.parametrize("encoded", [False, True])
def test_staged_load_from_parquet_by_row_group(tmp_path, encoded):
    rng = np.random.default_rng(5)
    rows = [
        (
            f"c{rng.integers(0, 300)}",
            int(rng.integers(0, 86_400 * 30)),
            TYPES[int(rng.integers(0, 3))],
            f"i{rng.integers(0, 40)}",
            None if rng.random() < 0.3 else "web",
            float(rng.integers(1, 50)),
            None if rng.random() < 0.8 else f"e{rng.integers(0, 50)}",
        )
        for _ in range(5000)
    ]
    table = _table(rows)
    path = tmp_path / "events.parquet"
    pq.write_table(
        _dictionary_encoded(table) if encoded else table, path, row_group_size=700
    )
    loaded, appended = Engine(), Engine()
    _before(loaded)
    _before(appended)
    loaded.load_events(path, rows_per_chunk=1000)
    for first in range(0, len(rows), 700):
        appended.append_events(table.slice(first, 700))
    assert _state(loaded) == _state(appended)


@pytest.mark.usefixtures("_every_dictionary")
@pytest.mark.parametrize("encoded", [False, True])
@pytest.mark.parametrize("bad_row", [0, 2_500, 4_999])
@pytest.mark.parametrize("column", ["ts", "customer_id", "type"])
def test_a_bad_row_anywhere_changes_nothing(tmp_path, bad_row, encoded, column):
    rows = [
        (f"c{i % 400}", i, "view", f"i{i % 70}", "web", None, f"e{i}")
        for i in range(5000)
    ]
    r = rows[bad_row]
    if column == "ts":
        rows[bad_row] = (r[0], -5_000_000_000, *r[2:])  # ts < 1970
    elif column == "customer_id":
        rows[bad_row] = ("", *r[1:])  # an empty id
    else:
        rows[bad_row] = (*r[:2], "Bad type", *r[3:])
    table = _table(rows)
    path = tmp_path / "events.parquet"
    pq.write_table(
        _dictionary_encoded(table) if encoded else table, path, row_group_size=1000
    )
    eng = Engine()
    _before(eng)
    before = _state(eng)
    with pytest.raises(InvalidInput) as err:
        eng.load_events(path, rows_per_chunk=1000)
    assert err.value.row == bad_row
    assert err.value.column == column
    assert _state(eng) == before


@pytest.mark.usefixtures("_every_dictionary")
def test_durable_load_of_a_dictionary_file_survives_a_restart(tmp_path):
    """A durable engine logs segd.pqdict's chunks and replays them after a restart: the
    same state as an in-memory load of the same file."""
    rows = [
        (
            f"c{i % 300}",
            i,
            TYPES[i % 3],
            f"i{i % 40}",
            None if i % 4 else "web",
            None,
            None,
        )
        for i in range(3000)
    ]
    path = tmp_path / "events.parquet"
    pq.write_table(_dictionary_encoded(_table(rows)), path, row_group_size=700)
    memory = Engine()
    memory.load_events(path, rows_per_chunk=1000)
    with Engine.open(tmp_path / "db") as eng:
        eng.load_events(path, rows_per_chunk=1000)
        assert _state(eng) == _state(memory)
    with Engine.open(tmp_path / "db") as again:
        assert _state(again) == _state(memory)


@settings(max_examples=30, deadline=None)
@given(st.lists(ROW, min_size=1, max_size=60), st.integers(1, 25))
def test_staged_load_into_an_empty_engine_equals_appends(rows, chunk):
    """An empty engine knows none of the load's values, so the staged codes are the
    engine's and the commit skips the remapping gathers (``ingest._identity_or``): the
    result must still be the appends' exactly, codes included."""
    table = _table(rows)
    loaded, appended = Engine(), Engine()
    report = loaded.load_events(table, rows_per_chunk=chunk)
    kept = 0
    for first in range(0, len(rows), chunk):
        kept += appended.append_events(table.slice(first, chunk)).rows
    assert report.rows == kept
    assert _state(loaded) == _state(appended)
    assert (
        loaded.store.contacts.ids.to_arrow() == appended.store.contacts.ids.to_arrow()
    )
    for name, log in loaded.store.logs.items():
        other = appended.store.logs[name]
        assert np.array_equal(log.cid, other.cid)
        for d in log.dims():
            assert np.array_equal(log.dim(d), other.dim(d))
