"""Bulk ``load_events`` by link columns (issue 12): the whole load is one batch for
identity, whatever its chunks; bad input stores nothing; durable loads replay exactly."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from segd import Engine
from segd.errors import InvalidInput
from segd.identity import IdentityConflict
from segd.ingest import read_table

T = 1_735_689_600  # 2025-01-01
NOW = T + 10 * 86_400


def ev(cid, dt, etype, **kw):
    return {"customer_id": cid, "ts": T + dt, "type": etype, **kw}


ROWS = [
    ev("a", 1, "view", device_id="d1"),
    ev(None, 2, "view", device_id="d2"),
    ev(None, 3, "add_to_cart", device_id="d3", item_id="i1"),
    ev(None, 4, "view", device_id="d1"),
    ev(None, 5, "visit", device_id="d3", email=" Ann@Shop.RU "),
    ev(None, 6, "order", email="ann@shop.ru", order_id="o1", amount=10.0),
    ev("b", 7, "order", order_id="o2", amount=5.0),
    ev(None, 8, "view", device_id="d2", card="42"),
]


def state(eng: Engine) -> dict:
    """What a load did, by customer_id: events per contact and type, links, sizes."""
    s = eng.stats()
    out = {"contacts": s["contacts"], "types": s["event_types"], "by": {}}
    for q in ("view()", "order()", "add_to_cart()", "visit()", "order() count >= 2"):
        out["by"][q] = sorted(eng.segment(q, now=NOW).ids())
    out["links"] = {
        (k, v): eng.resolve(k, v)
        for k, v in [
            ("device_id", "d1"),
            ("device_id", "d2"),
            ("device_id", "d3"),
            ("email", "ann@shop.ru"),
            ("card", "42"),
        ]
    }
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_load_by_links_is_one_batch_whatever_the_chunks(chunk):
    by_load, by_append = Engine(), Engine()
    by_load.load_events(ROWS, rows_per_chunk=chunk)
    by_append.append_events(ROWS)
    assert state(by_load) == state(by_append)
    got = state(by_load)
    assert got["contacts"] == 4  # a, device_id:d2, device_id:d3 (+ email), b
    assert got["links"][("device_id", "d1")] == "a"
    assert got["links"][("email", "ann@shop.ru")] == "device_id:d3"
    assert got["links"][("card", "42")] == "device_id:d2"
    # d3's cart and its email's order are one contact: the cart is not abandoned
    assert got["by"]["order()"] == ["b", "device_id:d3"]


def test_rows_sharing_a_value_across_chunks_join_known_contacts():
    eng = Engine()
    eng.append_events([ev("p", 0, "view")])
    eng.link("p", "email", "p@x.io")
    rows = [
        ev(None, 1, "view", device_id="dx"),  # chunk 1: an unknown device ...
        ev(None, 2, "view", email="P@x.io", device_id="dx"),  # ... is p's (chunk 2)
    ]
    eng.load_events(rows, rows_per_chunk=1)
    assert eng.resolve("device_id", "dx") == "p"
    assert eng.stats()["contacts"] == 1
    assert eng.count("view() count >= 3", now=NOW) == 1


def test_parquet_without_customer_id_streams_by_row_group(tmp_path):
    rows = [r for r in ROWS if r["customer_id"] != "b"]  # b's row has no link
    table = read_table(rows, "events").drop_columns(["customer_id"])
    path = tmp_path / "by_link.parquet"
    pq.write_table(table, path, row_group_size=3)
    eng = Engine()
    report = eng.load_events(path, rows_per_chunk=2)
    assert report.rows == len(rows)
    assert eng.resolve("device_id", "d1") == "device_id:d1"
    assert eng.resolve("email", "ANN@shop.ru") == "device_id:d3"
    assert eng.stats()["contacts"] == 3  # d1, d2 (+ card), d3 (+ email)
    assert "device_id" not in eng.store.event_fields()  # identity, not a property


def test_row_naming_nobody_is_refused_by_load_row_and_nothing_is_stored():
    eng = Engine()
    eng.append_events([ev("a", 0, "view")])
    before = state(eng)
    rows = [*ROWS, ev(None, 9, "view")]  # neither an id nor a link value
    with pytest.raises(InvalidInput) as err:
        eng.load_events(rows, rows_per_chunk=3)
    assert (err.value.row, err.value.column) == (len(ROWS), "customer_id")
    assert "names no contact" in err.value.reason
    assert state(eng) == before
    assert eng.resolve("device_id", "d2") is None


def test_bad_link_value_is_refused_at_its_load_row():
    eng = Engine()
    rows = [*ROWS[:5], ev(None, 9, "view", email="not-an-email")]
    with pytest.raises(InvalidInput) as err:
        eng.load_events(rows, rows_per_chunk=2)
    assert (err.value.row, err.value.column) == (5, "email")
    assert eng.stats()["contacts"] == 0


def test_conflict_rejects_the_load_by_default_and_merges_on_request():
    eng = Engine()
    eng.append_events([ev("a", 0, "view", device_id="d1"), ev("b", 0, "order")])
    rows = [
        ev(None, 1, "view", device_id="d7"),
        ev("b", 2, "view", device_id="d1"),  # d1 is a's: a conflict
        ev("b", 3, "view", device_id="d1"),  # the same identity: reported once
        ev("c", 4, "view", device_id="d9"),
    ]
    before = state(eng)
    with pytest.raises(IdentityConflict) as err:
        eng.load_events(rows, rows_per_chunk=2)
    assert [(v.row, v.column) for v in err.value.violations] == [(1, "device_id")]
    assert state(eng) == before
    assert eng.resolve("device_id", "d9") is None
    eng.load_events(rows, rows_per_chunk=2, on_conflict="merge")
    assert eng.resolve("customer_id", "a") == "b"
    assert eng.resolve("device_id", "d1") == "b"
    assert eng.count("view() count >= 3", now=NOW) == 1  # b: a's view + two of its own


def test_on_conflict_must_be_a_policy():
    with pytest.raises(InvalidInput) as err:
        Engine().load_events(ROWS, on_conflict="merge-all")
    assert err.value.where == "on_conflict"


def test_plain_loads_are_unchanged_by_link_kinds():
    """A load without link columns takes the plain path (customer_id required)."""
    eng = Engine()
    with pytest.raises(InvalidInput) as err:
        eng.load_events([ev(None, 1, "view")])
    assert err.value.column == "customer_id"


@pytest.fixture
def data_dir():
    d = Path(tempfile.mkdtemp(prefix="segd-loadlink-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _open(path: Path) -> Engine:
    eng = Engine.open(path, segment_bytes=2_000)
    eng.snapshot_background = False
    return eng


def test_durable_load_by_links_survives_restart_crash_and_snapshot(data_dir):
    model = Engine()
    model.append_events([ev("a", 0, "view", device_id="d1"), ev("b", 0, "order")])
    model.load_events(ROWS, rows_per_chunk=2)
    merge_rows = [ev("b", 9, "view", device_id="d1")]
    model.load_events(merge_rows, on_conflict="merge")
    want = state(model)

    eng = _open(data_dir)
    eng.append_events([ev("a", 0, "view", device_id="d1"), ev("b", 0, "order")])
    eng.load_events(ROWS, rows_per_chunk=2)
    eng.load_events(merge_rows, on_conflict="merge")
    assert state(eng) == want
    eng.close()
    eng = _open(data_dir)  # replay from the log
    assert state(eng) == want
    eng._dir_lock.release()  # a crash: abandoned without close
    eng = _open(data_dir)
    assert state(eng) == want
    eng.snapshot()
    eng.close()
    eng = _open(data_dir)
    assert state(eng) == want
    eng.close()


def test_durable_refused_load_leaves_nothing_to_replay(data_dir):
    eng = _open(data_dir)
    eng.append_events([ev("a", 0, "view", device_id="d1")])
    with pytest.raises(IdentityConflict):
        eng.load_events([ev(None, 1, "view", device_id="d5"),
                         ev("b", 2, "view", device_id="d1")], rows_per_chunk=1)  # fmt: skip
    with pytest.raises(InvalidInput):
        eng.load_events([ev(None, 1, "view", device_id="d6"), ev(None, 2, "view")])
    want = state(eng)
    eng.close()
    eng = _open(data_dir)
    assert state(eng) == want
    assert eng.resolve("device_id", "d5") is None
    assert eng.stats()["contacts"] == 1
    eng.close()


def test_identity_codes_are_dense_per_distinct_identity():
    from segd.load_identity import LoadIdentity

    eng = Engine()
    ident = LoadIdentity(["email", "card", "device_id"])
    table = read_table(ROWS, "events")
    _, cols = ident.split(eng, table, 0)
    codes = ident.add(cols, 0)
    # rows 1 and 7 share d2 but differ by card: distinct identities
    assert codes.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    again = ident.add(cols, 8)
    assert np.array_equal(again, codes) and len(ident) == 8
    assert np.array_equal(ident.codes(cols), codes)


def test_csv_by_link_reads_the_header_for_its_link_columns(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "ts,type,device_id,customer_id\n"
        "2025-01-01T00:00:01Z,view,d1,\n"
        "2025-01-01T00:00:02Z,view,d1,a\n"
        "2025-01-01T00:00:03Z,order,d2,\n"
    )
    eng = Engine()
    eng.load_events(path, rows_per_chunk=1)
    assert eng.resolve("device_id", "d1") == "a"
    assert eng.resolve("device_id", "d2") == "device_id:d2"
    assert eng.count("view() count >= 2", now=NOW) == 1


def test_load_contacts_by_link_takes_the_conflict_policy():
    eng = Engine()
    eng.upsert_contacts([{"customer_id": "a", "city": "Omsk"}])
    eng.link("a", "email", "a@x.io")
    eng.upsert_contacts([{"customer_id": "b", "city": "Kazan"}])
    eng.link("b", "card", "7")
    rows = [{"customer_id": None, "email": "a@x.io", "card": "7", "rating": 5}]
    with pytest.raises(IdentityConflict):
        eng.load_contacts(rows)
    eng.load_contacts(rows, on_conflict="merge")
    assert eng.resolve("card", "7") == eng.resolve("email", "a@x.io")
    assert eng.stats()["contacts"] == 1
