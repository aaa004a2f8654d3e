"""Data that must be refused (issue 9, "Data quietly wrong"), event-id deduplication,
loaded-file digests, and the structure of input errors.

Every refusal names the row and the column as attributes (``err.row``, ``err.column``,
``err.reason``), not only in the message, and leaves the store exactly as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from segd import Engine
from segd.errors import AlreadyExists, InvalidInput, ValueRejected
from segd.native import MAX_SEC, NO_CODE
from segd.timeutil import MAX_ABS_MS, MAX_EVENT_S, parse_iso

NOW = 1_750_000_000
T0 = 1_735_787_045


def ev(cid: str = "c1", ts: object = T0, type_: str = "view", **extra) -> dict:
    return {"customer_id": cid, "ts": ts, "type": type_, **extra}


@pytest.fixture
def eng() -> Engine:
    e = Engine()
    e.upsert_contacts(
        [
            {"customer_id": "c1", "city": "Kazan", "rating": 3},
            {"customer_id": "c2", "city": "Moscow"},
        ]
    )
    e.append_events([ev("c1"), ev("c1", T0 + 5, "order", amount=10.0, order_id="o1")])
    return e


def state(e: Engine) -> tuple:
    s = e.stats()
    return (
        s["contacts"],
        s["events"],
        s["items"],
        dict(s["event_types"]),
        {n: c.kind for n, c in e.store.contacts.columns.items()},
        [e.store.contacts.profile(i) for i in range(s["contacts"])],
        len(e.store.event_ids),
        dict(e.store.sources),
    )


def refused(e: Engine, call, row: int | None, column: str) -> InvalidInput:
    before = state(e)
    with pytest.raises(InvalidInput) as info:
        call()
    err = info.value
    assert (err.row, err.column) == (row, column), (err.row, err.column, str(err))
    assert err.reason and err.reason in str(err)
    assert err.violations[0].row == row and err.violations[0].column == column
    assert state(e) == before
    return err


# -- events -----------------------------------------------------------------------------
@pytest.mark.parametrize("column", ["customer_id", "item_id", "order_id", "event_id"])
def test_empty_identifier_is_refused(eng: Engine, column: str) -> None:
    rows = [ev("c1", item_id="i1", order_id="o9", event_id="e1") for _ in range(3)]
    rows[1] = {**rows[1], "event_id": "e2", column: ""}
    err = refused(eng, lambda: eng.append_events(rows), 1, column)
    assert "must not be empty" in err.reason


def test_empty_customer_id_in_dictionary_column_is_refused(eng: Engine) -> None:
    table = pa.table(
        {
            "customer_id": pa.array(["c1", "", "c1"]).dictionary_encode(),
            "ts": [T0] * 3,
            "type": ["view"] * 3,
        }
    )
    refused(eng, lambda: eng.append_events(table), 1, "customer_id")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinite_amounts_are_refused(eng: Engine, bad: float) -> None:
    rows = [ev(type_="order", amount=1.0), ev(type_="order", amount=bad)]
    err = refused(eng, lambda: eng.append_events(rows), 1, "amount")
    assert "finite" in err.reason


def test_null_amount_is_no_amount(eng: Engine) -> None:
    eng.append_events([ev("c2", type_="order", amount=None)])
    assert eng.count("revenue = 0 and orders_count = 1", NOW) == 1


@pytest.mark.parametrize(
    "bad",
    ["View", "1view", "_view", "view-page", "vïew", "v" * 65, "x" * 10_000, ""],
)
def test_event_types_outside_the_documented_pattern(eng: Engine, bad: str) -> None:
    rows = [ev(), ev(type_=bad)]
    err = refused(eng, lambda: eng.append_events(rows), 1, "type")
    assert len(str(err)) < 300  # a 10,000-character type is not quoted whole


def test_event_type_of_64_characters_is_accepted(eng: Engine) -> None:
    name = "a" + "b" * 63
    eng.append_events([ev(type_=name)])
    assert eng.stats()["event_types"][name] == 1


@pytest.mark.parametrize(
    "ts",
    [
        pa.scalar(2**62, pa.timestamp("ms")),
        pa.scalar(-(2**62), pa.timestamp("ms")),
        pa.scalar(0, pa.timestamp("ms")),
        pa.scalar((MAX_EVENT_S + 1) * 1000, pa.timestamp("ms")),
    ],
)
def test_event_times_outside_the_range(eng: Engine, ts) -> None:
    table = pa.table(
        {
            "customer_id": ["c1", "c1"],
            "ts": pa.array([T0 * 1000, ts.value], pa.timestamp("ms")),
            "type": ["view", "view"],
        }
    )
    refused(eng, lambda: eng.append_events(table), 1, "ts")


def test_rows_are_counted_from_the_start_of_a_chunked_load(tmp_path) -> None:
    import pyarrow.parquet as pq

    e = Engine()
    rows = [ev(f"c{i}", T0 + i) for i in range(10)]
    rows[7]["type"] = "Bad"
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(InvalidInput) as info:
        e.load_events(path, rows_per_chunk=3)
    assert (info.value.row, info.value.column) == (7, "type")
    assert str(info.value).startswith("events[7].type: ")
    assert e.stats()["events"] == 0


# -- contacts -----------------------------------------------------------------------------
def test_int_for_an_existing_text_attribute_is_refused(eng: Engine) -> None:
    rows = [{"customer_id": "c1", "city": "Omsk"}, {"customer_id": "c2", "city": 5}]
    # a list of dicts mixing text and int fails at the row that breaks the type
    err = refused(eng, lambda: eng.upsert_contacts(rows), 1, "city")
    assert "text" in err.reason
    table = pa.table({"customer_id": ["c2"], "city": pa.array([5], pa.int64())})
    err = refused(eng, lambda: eng.upsert_contacts(table), None, "city")
    assert "expected text" in err.reason and "category" in err.reason


def test_birth_date_as_a_plain_int_is_refused(eng: Engine) -> None:
    table = pa.table({"customer_id": ["c1"], "birth_date": [19870412]})
    err = refused(eng, lambda: eng.upsert_contacts(table), None, "birth_date")
    assert "seconds or milliseconds" in err.reason
    eng.upsert_contacts([{"customer_id": "c1", "birth_date": "1987-04-12"}])
    assert eng.store.contacts.columns["birth_date"].kind == "timestamp"


def test_plain_numbers_for_an_existing_time_attribute_are_refused(eng: Engine) -> None:
    eng.upsert_contacts(
        [{"customer_id": "c1", "seen": datetime(2024, 1, 1, tzinfo=UTC)}]
    )
    table = pa.table({"customer_id": ["c1"], "seen": [1_700_000_000_000]})
    refused(eng, lambda: eng.upsert_contacts(table), None, "seen")


@pytest.mark.parametrize("ms", [MAX_ABS_MS, -MAX_ABS_MS, 2**63 - 1])
def test_attribute_times_outside_2_62_ms(eng: Engine, ms: int) -> None:
    table = pa.table(
        {
            "customer_id": ["c1", "c2"],
            "seen": pa.array([0, ms], pa.timestamp("ms", tz="UTC")),
        }
    )
    err = refused(eng, lambda: eng.upsert_contacts(table), 1, "seen")
    assert "2^62" in err.reason


def test_attribute_times_inside_the_range_beyond_year_9999(eng: Engine) -> None:
    ms = MAX_ABS_MS - 1
    table = pa.table(
        {"customer_id": ["c1"], "seen": pa.array([ms], pa.timestamp("ms", tz="UTC"))}
    )
    eng.upsert_contacts(table)
    col = eng.store.contacts.columns["seen"]
    assert int(col.values[eng.store.contacts.cid_of("c1")]) == ms


def test_seconds_timestamps_that_overflow_ms_are_refused(eng: Engine) -> None:
    table = pa.table(
        {
            "customer_id": ["c1"],
            "seen": pa.array([2**62], pa.timestamp("s", tz="UTC")),
        }
    )
    refused(eng, lambda: eng.upsert_contacts(table), 0, "seen")


def test_fraction_for_an_int_attribute_names_the_row(eng: Engine) -> None:
    table = pa.table({"customer_id": ["c1", "c2"], "rating": [1.0, 2.5]})
    err = refused(eng, lambda: eng.upsert_contacts(table), 1, "rating")
    assert "2.5" in err.reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_float_attribute_is_refused(eng: Engine, bad: float) -> None:
    table = pa.table({"customer_id": ["c1", "c2"], "score": [1.5, bad]})
    err = refused(eng, lambda: eng.upsert_contacts(table), 1, "score")
    assert "finite" in err.reason


def test_text_for_an_int_attribute_is_refused(eng: Engine) -> None:
    table = pa.table({"customer_id": ["c1"], "rating": ["7"]})
    refused(eng, lambda: eng.upsert_contacts(table), None, "rating")


def test_null_tag_names_the_row(eng: Engine) -> None:
    eng.upsert_contacts([{"customer_id": "c1", "tags": ["a"]}])
    table = pa.table(
        {"customer_id": ["c1", "c2"], "tags": pa.array([["a"], ["b", None]])}
    )
    refused(eng, lambda: eng.upsert_contacts(table), 1, "tags")


def test_empty_customer_id_in_contacts_is_refused(eng: Engine) -> None:
    rows = [{"customer_id": "c1", "city": "Omsk"}, {"customer_id": "", "city": "Ufa"}]
    refused(eng, lambda: eng.upsert_contacts(rows), 1, "customer_id")


def test_empty_item_id_is_refused(eng: Engine) -> None:
    rows = [{"item_id": "i1", "brand": "X"}, {"item_id": "", "brand": "Y"}]
    refused(eng, lambda: eng.upsert_items(rows), 1, "item_id")


# -- event ids ---------------------------------------------------------------------------
def test_repeated_event_ids_are_dropped_within_and_across_batches() -> None:
    e = Engine()
    first = e.append_events(
        [
            ev("c1", T0, "order", amount=10.0, order_id="o1", event_id="m1"),
            ev("c1", T0, "order", amount=10.0, order_id="o1", event_id="m1"),
            ev("c2", T0, "view", event_id="m2"),
            ev("c2", T0 + 1, "view"),  # no id: always kept
        ]
    )
    assert (first.rows, first.duplicate_events) == (3, 1)
    again = e.append_events(
        [
            ev("c1", T0, "order", amount=10.0, order_id="o1", event_id="m1"),
            ev("c2", T0 + 1, "view"),
            ev("c3", T0 + 2, "view", event_id="m3"),
        ]
    )
    assert (again.rows, again.duplicate_events) == (2, 1)
    assert e.count("revenue = 10", NOW) == 1
    assert e.stats()["events"] == 5
    assert e.store.contacts.cid_of("c3") >= 0


def test_a_batch_of_only_duplicates_creates_no_contacts() -> None:
    e = Engine()
    e.append_events([ev("c1", event_id="m1")])
    report = e.append_events([ev("c9", event_id="m1")])
    assert (report.rows, report.duplicate_events) == (0, 1)
    assert e.store.contacts.cid_of("c9") < 0


def test_loading_the_same_events_file_twice_keeps_revenue(tmp_path) -> None:
    import pyarrow.parquet as pq

    rows = [
        ev(f"c{i % 3}", T0 + i, "order", amount=5.0, order_id=f"o{i}", event_id=f"e{i}")
        for i in range(9)
    ]
    path = tmp_path / "orders.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    e = Engine()
    assert e.load_events(path, rows_per_chunk=4).rows == 9
    again = e.load_events(path, rows_per_chunk=4)
    assert (again.rows, again.duplicate_events) == (0, 9)
    assert e.count("revenue = 15 and orders_count = 3", NOW) == 3


# -- loaded sources ----------------------------------------------------------------------
def test_a_file_digest_is_refused_the_second_time_unless_forced() -> None:
    e = Engine()
    e.append_events([ev()], source="blake2b:ab", source_name="a.csv")
    before = state(e)
    with pytest.raises(AlreadyExists, match="a.csv.*--force"):
        e.append_events([ev("c7")], source="blake2b:ab", source_name="a.csv")
    assert state(e) == before
    assert e.loaded_source("blake2b:ab").name == "a.csv"
    e.append_events([ev("c7")], source="blake2b:ab", source_name="a.csv", force=True)
    assert e.stats()["events"] == 2


def test_an_invalid_first_batch_records_no_digest() -> None:
    e = Engine()
    with pytest.raises(InvalidInput):
        e.append_events([ev(type_="Bad")], source="blake2b:cd")
    assert e.loaded_source("blake2b:cd") is None


# -- the structure of errors ---------------------------------------------------------------
def test_value_rejected_is_located_by_the_ingest_path() -> None:
    err = ValueRejected("bad value", 4).located("contacts", "city")
    assert (err.kind, err.row, err.column, err.reason) == (
        "contacts",
        4,
        "city",
        "bad value",
    )
    assert str(err) == "contacts[4].city: bad value"
    shifted = err.shifted(10)
    assert (shifted.row, str(shifted)) == (14, "contacts[14].city: bad value")
    named = err.in_stream_batch(2)
    assert str(named) == "batch 2: contacts[4].city: bad value"
    assert (named.batch, named.row, named.column) == (2, 4, "city")
    assert named.violations[0].where == "contacts[4].city"


def test_ingest_never_parses_messages() -> None:
    from pathlib import Path

    import segd.ingest

    source = Path(segd.ingest.__file__).read_text()
    assert ".partition(" not in source and "_ROW_PATH" not in source


# -- constants and time --------------------------------------------------------------------
def test_constants_have_one_home() -> None:
    import segd.aggregates
    import segd.catalog
    import segd.columns
    import segd.events
    import segd.ingest

    assert NO_CODE == 0xFFFFFFFF and MAX_SEC == MAX_EVENT_S == 2**32 - 1
    for module in (segd.ingest, segd.events, segd.catalog, segd.aggregates):
        assert getattr(module, "NO_CODE", NO_CODE) == NO_CODE
    assert segd.columns.NO_CODE == np.uint32(NO_CODE)


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2025-01-02", 1_735_776_000_000),
        ("2025-01-02T03:04:05Z", 1_735_787_045_000),
        ("2025-01-02T06:04:05+03:00", 1_735_787_045_000),
        ("2025-01-02T03:04:05.123", 1_735_787_045_123),
    ],
)
def test_one_iso_parser(text: str, ms: int) -> None:
    from segd.timeutil import iso_to_ms, parse_instant_s

    assert iso_to_ms(text) == ms
    assert parse_instant_s(text, "x") * 1000 == pytest.approx(ms)
    assert parse_iso(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "2025-1-2",
        "yesterday",
        "2025-01-02 03:04",
        "",
        "2025-13-01",
        "2025-01-02T03:04z",
    ],
)
def test_iso_parser_refuses(text: str) -> None:
    assert parse_iso(text) is None


# -- durability: event ids and file digests survive restarts ------------------------------
@pytest.mark.parametrize("with_snapshot", [False, True])
def test_event_ids_and_loaded_files_survive_a_restart(tmp_path, with_snapshot) -> None:
    path = tmp_path / "data"
    with Engine.open(path) as e:
        e.append_events([ev("c1", event_id="m1"), ev("c2", event_id="m2")])
        e.append_events([ev("c3")], source="blake2b:f1", source_name="f.csv")
        if with_snapshot:
            e.snapshot()
            e.append_events([ev("c4", event_id="m3")])
    with Engine.open(path) as e:
        assert e.stats()["events"] == 3 + (1 if with_snapshot else 0)
        report = e.append_events([ev("c1", event_id="m1"), ev("c5", event_id="m9")])
        assert (report.rows, report.duplicate_events) == (1, 1)
        if with_snapshot:
            assert e.append_events([ev("c4", event_id="m3")]).rows == 0
        assert e.loaded_source("blake2b:f1").name == "f.csv"
        with pytest.raises(AlreadyExists):
            e.append_events([ev("c3")], source="blake2b:f1")


def test_bulk_load_duplicates_replay_the_same(tmp_path) -> None:
    path = tmp_path / "data"
    rows = [ev(f"c{i}", T0 + i, event_id=f"e{i % 4}") for i in range(10)]
    with Engine.open(path) as e:
        report = e.load_events(rows, rows_per_chunk=3)
        assert (report.rows, report.duplicate_events) == (4, 6)
    with Engine.open(path) as e:
        assert e.stats()["events"] == 4
