"""segd.readahead: same items in the same order, errors where they happened, no thread
left behind; and a bulk load gives the same engine state with and without it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segd import Engine, ingest
from segd.errors import InvalidInput
from segd.readahead import read_ahead


def _threads() -> int:
    return sum(t.name == "segd-read-ahead" for t in threading.enumerate())


def test_items_in_order() -> None:
    assert list(read_ahead(iter(range(100)))) == list(range(100))
    assert list(read_ahead(iter([]))) == []
    assert _threads() == 0


def test_producer_error_is_raised_after_the_items_before_it() -> None:
    def items():
        yield 1
        yield 2
        raise InvalidInput.at("row 3", "bad")

    got = []
    with pytest.raises(InvalidInput, match="bad"):
        for x in read_ahead(items()):
            got.append(x)
    assert got == [1, 2]
    assert _threads() == 0


def test_consumer_stopping_early_stops_and_closes_the_producer() -> None:
    closed = threading.Event()
    produced = []

    def items():
        try:
            for i in range(1_000_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    it = read_ahead(items(), depth=2)
    assert next(it) == 0
    it.close()
    assert closed.is_set()
    assert len(produced) <= 4  # at most depth items ahead, plus the one in hand
    assert _threads() == 0


def test_the_producer_runs_beside_the_consumer() -> None:
    def items():
        for i in range(4):
            time.sleep(0.05)
            yield i

    t0 = time.perf_counter()
    for _ in read_ahead(items()):
        time.sleep(0.05)
    # inline: 8 sleeps (0.4 s); overlapped: ~5 (0.25 s)
    assert time.perf_counter() - t0 < 0.38


def _state(eng: Engine) -> dict:
    """Every log's columns as stored (codes, not values: the two loads must number
    contacts, items and values alike), and the dictionaries."""
    store = eng.store
    out: dict = {
        "contacts": store.contacts.ids.to_arrow().to_pylist(),
        "items": store.catalog.ids.to_arrow().to_pylist(),
    }
    for name, log in sorted(store.logs.items()):
        out[name] = {
            "cid": log.cid.tolist(),
            "ts": log.ts.tolist(),
            "amount": None
            if log.amount is None
            else [None if np.isnan(a) else a for a in log.amount.tolist()],
            "dims": {d: log.dim(d).tolist() for d in sorted(log.dims())},
        }
    return out


def test_load_with_and_without_read_ahead_give_the_same_engine(
    tmp_path, monkeypatch
) -> None:
    rng = np.random.default_rng(7)
    n = 5_000
    table = pa.table(
        {
            "customer_id": pa.array([f"c{i}" for i in rng.integers(0, 700, n)]),
            "ts": pa.array(1_735_689_600 + rng.integers(0, 10**6, n), pa.int64()),
            "type": pa.array(rng.choice(["view", "order", "cart", "search"], n)),
            "item_id": pa.array(
                [None if i % 5 == 0 else f"i{i}" for i in rng.integers(0, 90, n)]
            ),
            "amount": pa.array(
                [None if i % 3 else float(i) for i in rng.integers(0, 50, n)]
            ),
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=700)
    states = []
    for ahead in (True, False):
        monkeypatch.setattr(ingest, "READ_AHEAD", ahead)
        eng = Engine()
        eng.load_events(str(path), rows_per_chunk=1_000)
        states.append(_state(eng))
    assert states[0] == states[1]
    assert _threads() == 0


def test_a_bad_row_group_under_read_ahead_keeps_its_load_row(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(ingest, "READ_AHEAD", True)
    n = 2_000
    types = ["view"] * n
    types[1_234] = "Bad Type"
    table = pa.table(
        {
            "customer_id": pa.array([f"c{i % 50}" for i in range(n)]),
            "ts": pa.array([1_735_689_600 + i for i in range(n)], pa.int64()),
            "type": pa.array(types),
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=500)
    eng = Engine()
    with pytest.raises(InvalidInput) as err:
        eng.load_events(str(path), rows_per_chunk=500)
    assert err.value.row == 1_234
    assert all(len(log.cid) == 0 for log in eng.store.logs.values())
    assert _threads() == 0
