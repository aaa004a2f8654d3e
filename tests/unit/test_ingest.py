"""Unit tests of the ingest path (engine.ingest through Engine): whole-batch validation
with errors naming the row and the column, the accepted input forms, and attribute upserts.

A rejected batch must leave the store exactly as it was: every rejection test compares a
snapshot (stats counts, event types, contact count, a segment count) before and after.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segd import Engine
from segd.errors import InvalidInput

NOW = 1_750_000_000  # 2025-06-15T15:06:40Z
T0 = 1_735_787_045  # 2025-01-02T03:04:05Z
DAY0 = 1_735_776_000  # 2025-01-02T00:00:00Z
MAX_S = 2**32 - 1  # 2106-02-07T06:28:15Z


def ev(cid: str = "c1", ts: object = T0, type_: str = "view", **extra) -> dict:
    return {"customer_id": cid, "ts": ts, "type": type_, **extra}


@pytest.fixture
def eng() -> Engine:
    e = Engine()
    e.upsert_contacts(
        [
            {"customer_id": "c1", "city": "Kazan", "rating": 3},
            {"customer_id": "c2", "city": "Moscow", "rating": None},
            {"customer_id": "c3", "city": None, "rating": 7},
        ]
    )
    e.append_events(
        [
            ev("c1", T0, "view", item_id="i1"),
            ev("c2", T0 + 5, "view", item_id="i2"),
            ev("c1", T0 + 9, "order", item_id="i1", amount=10.0, order_id="o1"),
        ]
    )
    return e


def snapshot(e: Engine) -> tuple:
    s = e.stats()
    return (
        s["contacts"],
        s["events"],
        s["items"],
        dict(s["event_types"]),
        e.count("view()", NOW),
        e.count("order() or view() count 0..0", NOW),
        e.segment("rating >= 0").ids(),
    )


def rejected(e: Engine, batch, where: str, match: str = "") -> InvalidInput:
    """Append `batch`, expect InvalidInput at `where`, and check nothing changed."""
    before = snapshot(e)
    with pytest.raises(InvalidInput) as info:
        e.append_events(batch)
    err = info.value
    assert str(err).startswith(f"{where}: "), str(err)
    assert [v.where for v in err.violations] == [where]
    assert match in str(err)
    assert snapshot(e) == before
    return err


def log_ts(e: Engine, etype: str = "view") -> list[int]:
    return e.store.logs[etype].ts.tolist()


# -- rejected event batches ------------------------------------------------------------
def test_missing_customer_id_column(eng: Engine) -> None:
    rejected(eng, [{"ts": T0, "type": "view"}], "events.customer_id", "missing")


def test_missing_ts_and_type_columns(eng: Engine) -> None:
    rejected(eng, [{"customer_id": "c1", "type": "view"}], "events.ts", "missing")
    rejected(eng, [{"customer_id": "c1", "ts": T0}], "events.type", "missing")


@pytest.mark.parametrize("k", [0, 3])
def test_null_customer_id_at_row_k(eng: Engine, k: int) -> None:
    batch = [ev(f"n{i}") for i in range(5)]
    batch[k]["customer_id"] = None
    rejected(eng, batch, f"events[{k}].customer_id", "NULL")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("yesterday", "cannot parse 'yesterday'"),
        ("2025-13-01", "cannot parse '2025-13-01'"),
        ("1969-12-31T23:59:59Z", "outside 1970"),
        ("1970-01-01T00:00:00Z", "outside 1970"),  # 0 is "never" in the rollups
        ("2106-02-07T06:28:16Z", "outside 1970"),  # first second past uint32
        ("2200-01-01", "outside 1970"),
        (None, "ts is NULL"),
    ],
)
def test_bad_ts_text_at_row_3(eng: Engine, bad, match: str) -> None:
    batch = [ev("n0", "2025-01-01"), ev("n1"), ev("n2", "2025-01-03"), ev("n3", bad)]
    for i in (0, 2):  # the good rows are text too, so the column is text
        batch[i]["ts"] = str(batch[i]["ts"])
    batch[1]["ts"] = "2025-01-02T00:00:00Z"
    rejected(eng, batch, "events[3].ts", match)


@pytest.mark.parametrize("bad", [0, -5, 2**32, 2**40])
def test_bad_epoch_seconds(eng: Engine, bad: int) -> None:
    rejected(eng, [ev("n0", T0), ev("n1", bad)], "events[1].ts", "outside 1970")


def test_arrow_timestamp_before_1970_rejected(eng: Engine) -> None:
    ts = pa.array([T0 * 1000, -1], pa.timestamp("ms", tz="UTC"))
    table = pa.table({"customer_id": ["n0", "n1"], "type": ["view"] * 2, "ts": ts})
    rejected(eng, table, "events[1].ts", "outside 1970")


@pytest.mark.parametrize("bad", ["View", "9lives", "add-to-cart", "", "order!"])
def test_bad_type_name(eng: Engine, bad: str) -> None:
    batch = [ev("n0"), ev("n1", type_="order"), ev("n2", type_=bad)]
    rejected(eng, batch, "events[2].type", repr(bad))


def test_null_type(eng: Engine) -> None:
    batch = [ev("n0"), ev("n1")]
    batch[1]["type"] = None
    rejected(eng, batch, "events[1].type", "NULL")


def test_non_numeric_amount_column(eng: Engine) -> None:
    table = pa.table(
        {
            "customer_id": ["n0", "n1"],
            "ts": [T0, T0],
            "type": ["order", "order"],
            "amount": ["1.5", "x"],
        }
    )
    rejected(eng, table, "events.amount", "expected a number")


def test_non_numeric_amount_in_list_of_dicts_names_row_and_column(eng: Engine) -> None:
    batch = [ev("n0", amount=1.0), ev("n1", amount=2.0), ev("n2", amount="x")]
    rejected(eng, batch, "events[2].amount", "number")


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_infinite_amount(eng: Engine, bad: float) -> None:
    batch = [ev("n0", amount=1.0), ev("n1", amount=None), ev("n2", amount=bad)]
    rejected(eng, batch, "events[2].amount", "finite")


@pytest.mark.parametrize(
    ("value", "arrow"), [(1.5, "double"), (True, "bool"), ([1], "list")]
)
def test_non_text_custom_property_rejected(eng: Engine, value, arrow: str) -> None:
    err = rejected(eng, [ev("n0", score=value)], "events.score", "expected text")
    assert arrow in str(err)


@pytest.mark.parametrize("bad", ["Score", "1st", "my-prop", "a b", "é"])
def test_bad_column_name(eng: Engine, bad: str) -> None:
    rejected(eng, [ev("n0", **{bad: "x"})], f"events.{bad}", "[a-z_][a-z0-9_]*")


def test_duplicate_columns(eng: Engine) -> None:
    table = pa.table(
        [["n0"], [T0], ["view"], ["x"], ["y"]],
        names=["customer_id", "ts", "type", "phrase", "phrase"],
    )
    rejected(eng, table, "events.phrase", "twice")


def test_first_bad_row_is_reported_and_later_good_rows_not_applied(eng: Engine) -> None:
    batch = [ev(f"n{i}", T0 + i) for i in range(10)]
    batch[4]["ts"] = 0
    batch[7]["ts"] = -1
    rejected(eng, batch, "events[4].ts")
    assert eng.store.contacts.cid_of("n0") == -1


def test_unreadable_source(eng: Engine, tmp_path) -> None:
    before = snapshot(eng)
    with pytest.raises(InvalidInput, match="no such file"):
        eng.append_events(tmp_path / "missing.parquet")
    (tmp_path / "x.xlsx").write_text("nope")
    with pytest.raises(InvalidInput, match="unknown file type '.xlsx'"):
        eng.append_events(tmp_path / "x.xlsx")
    with pytest.raises(InvalidInput, match="got int"):
        eng.append_events(42)
    assert snapshot(eng) == before


# -- accepted event forms ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("ts", "want"),
    [
        ("2025-01-02T03:04:05Z", T0),
        ("2025-01-02T03:04:05", T0),  # no zone = UTC
        ("2025-01-02T06:04:05+03:00", T0),
        ("2025-01-01T22:04:05-05:00", T0),
        ("2025-01-02T03:04:05.999Z", T0),  # floored to the second
        ("2025-01-02", DAY0),
        ("1970-01-01T00:00:01Z", 1),
        ("2106-02-07T06:28:15Z", MAX_S),
        (T0, T0),
        (T0 + 0.75, T0),
        (1, 1),
        (MAX_S, MAX_S),
    ],
)
def test_accepted_ts_forms(ts, want: int) -> None:
    e = Engine()
    assert e.append_events([ev("c1", ts)]).rows == 1
    assert log_ts(e) == [want]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Moscow", None])
def test_arrow_timestamps(unit: str, tz: str | None) -> None:
    per = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    raw = [T0 * per + per - 1, (T0 + 60) * per]  # the first floors to T0
    table = pa.table(
        {
            "customer_id": ["c1", "c2"],
            "type": ["view", "view"],
            "ts": pa.array(raw, pa.timestamp(unit, tz=tz)),
        }
    )
    e = Engine()
    e.append_events(table)
    assert log_ts(e) == [T0, T0 + 60]


def test_arrow_timestamp_with_nulls_names_the_row(eng: Engine) -> None:
    ts = pa.array([T0 * 1000, None], pa.timestamp("ms", tz="UTC"))
    table = pa.table({"customer_id": ["n0", "n1"], "type": ["view"] * 2, "ts": ts})
    rejected(eng, table, "events[1].ts", "NULL")


def _event_rows() -> list[dict]:
    """Every row names every column (see the ragged-dicts test below)."""
    none = {"item_id": None, "amount": None, "order_id": None, "phrase": None}
    return [
        ev("c1", T0, "view", **{**none, "item_id": "i1"}),
        ev("c2", T0 + 1, "order", **{**none, "item_id": "i2", "amount": 12.5}),
        ev("c3", T0 + 2, "search", **{**none, "phrase": "tent"}),
    ]


def _check_loaded(e: Engine) -> None:
    s = e.stats()
    assert (s["contacts"], s["events"], s["items"]) == (3, 3, 2)
    assert s["event_types"] == {"view": 1, "order": 1, "search": 1}
    assert e.segment('search(phrase = "tent")', NOW).ids() == ["c3"]
    assert e.segment("order() sum(amount) between 12.5 and 12.5", NOW).ids() == ["c2"]
    assert log_ts(e, "order") == [T0 + 1]
    assert e.segment("orders_count = 1", NOW).ids() == ["c2"]


def test_parquet_file(tmp_path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(_event_rows()), path)
    e = Engine()
    assert e.load_events(path).rows == 3
    _check_loaded(e)


def test_csv_file(tmp_path) -> None:
    path = tmp_path / "events.csv"
    lines = ["customer_id,ts,type,item_id,amount,phrase"]
    lines += [
        "c1,2025-01-02T03:04:05Z,view,i1,,tent",
        "c2,2025-01-02T03:04:06Z,order,i2,12.5,x",
        "c3,2025-01-02T03:04:07Z,search,i1,,tent",
    ]
    path.write_text("\n".join(lines) + "\n")
    e = Engine()
    assert e.load_events(str(path)).rows == 3
    _check_loaded(e)


def test_csv_empty_cells_are_null(tmp_path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "customer_id,ts,type,item_id,order_id\n"
        "c1,2025-01-02T03:04:05Z,order,,\n"
        "c2,2025-01-02T03:04:06Z,order,,\n"
    )
    e = Engine()
    e.load_events(path)
    assert e.stats()["items"] == 0
    assert e.segment("orders_count = 1", NOW).ids() == ["c1", "c2"]


def test_json_lines_file(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    rows = _event_rows()
    for r in rows:
        r["ts"] = datetime.fromtimestamp(r["ts"], UTC).isoformat()
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    e = Engine()
    assert e.append_events(path).rows == 3
    _check_loaded(e)


def test_ragged_list_of_dicts_keeps_every_column() -> None:
    e = Engine()
    e.append_events(
        [
            ev("c1", T0, "view"),
            ev("c2", T0, "order", amount=9.0, order_id="o1"),
            ev("c3", T0, "search", phrase="tent"),
        ]
    )
    assert e.segment('search(phrase = "tent")', NOW).ids() == ["c3"]
    assert e.segment("revenue = 9", NOW).ids() == ["c2"]


def test_list_of_dicts_and_record_batch() -> None:
    e = Engine()
    e.append_events(_event_rows())
    _check_loaded(e)
    e2 = Engine()
    e2.append_events(pa.RecordBatch.from_pylist(_event_rows()))
    _check_loaded(e2)


def test_empty_batch_is_a_no_op(eng: Engine) -> None:
    before = snapshot(eng)
    assert eng.append_events([]).rows == 0
    assert snapshot(eng) == before


def test_unknown_customer_ids_create_contacts(eng: Engine) -> None:
    assert eng.store.contacts.cid_of("new1") == -1
    eng.append_events([ev("new1", T0), ev("new2", T0), ev("new1", T0 + 1)])
    assert eng.stats()["contacts"] == 5
    assert eng.explain("view()", "new1", NOW).attributes == {
        "city": None,
        "rating": None,
    }
    assert eng.segment("city is null", NOW).ids() == ["c3", "new1", "new2"]
    assert eng.segment("view() count 2..2", NOW).ids() == ["new1"]


def test_int_ids_are_cast_to_text() -> None:
    e = Engine()
    e.append_events(
        [
            {"customer_id": 17, "ts": T0, "type": "ad_click", "campaign": 42},
            {"customer_id": 18, "ts": T0, "type": "ad_click", "campaign": 7},
        ]
    )
    assert e.segment('ad_click(campaign = "42")', NOW).ids() == ["17"]
    assert e.segment('ad_click(campaign in ("7", "8"))', NOW).ids() == ["18"]
    assert e.store.contacts.cid_of("17") == 0


def test_null_amount_is_no_amount() -> None:
    """NULL is "no amount"; NaN is refused (tests/unit/test_ingest_refusals.py)."""
    e = Engine()
    e.append_events(
        [
            ev("c1", T0, "order", amount=None),
            ev("c1", T0, "order", amount=5.0),
            ev("c2", T0, "order", amount=None),
        ]
    )
    assert e.segment("order(amount >= 0)", NOW).ids() == ["c1"]
    assert e.segment("order() count 2..2 sum(amount) = 5", NOW).ids() == ["c1"]
    assert e.segment("revenue = 0", NOW).ids() == ["c2"]


# -- contacts and items ----------------------------------------------------------------
def test_typed_columns_from_arrow() -> None:
    table = pa.table(
        {
            "customer_id": ["a", "b", "c"],
            "i8": pa.array([1, None, -3], pa.int8()),
            "u32": pa.array([4_000_000_000, 1, None], pa.uint32()),
            "f32": pa.array([0.5, None, 2.0], pa.float32()),
            "flag": pa.array([True, False, None]),
            "seen": pa.array([0, 86_400_000, None], pa.timestamp("ms", tz="UTC")),
            "born": pa.array([0, 365, None], pa.date32()),
            "city": pa.array(["X", "Y", None]).dictionary_encode(),
            "tags": pa.array([["p", "q"], [], None], pa.list_(pa.string())),
        }
    )
    e = Engine()
    e.load_contacts(table)
    kinds = {n: c.kind for n, c in e.store.contacts.columns.items()}
    assert kinds == {
        "i8": "int",
        "u32": "int",
        "f32": "float",
        "flag": "bool",
        "seen": "timestamp",
        "born": "timestamp",
        "city": "category",
        "tags": "tags",
    }
    ids = lambda q: e.segment(q, NOW).ids()  # noqa: E731
    assert ids("i8 < 0") == ["c"]
    assert ids("i8 is null") == ["b"]
    assert ids("u32 > 3000000000") == ["a"]
    assert ids("f32 = 0.5") == ["a"]
    assert ids("flag = false") == ["b"]
    assert ids("flag is null") == ["c"]
    assert ids("seen >= 1970-01-02") == ["b"]
    assert ids('born = "1971-01-01"') == ["b"]
    assert ids('city != "X"') == ["b"]
    assert ids('tags contains_any ("q")') == ["a"]
    assert ids("tags is null") == ["c"]
    assert ids("tags is not null") == ["a", "b"]
    assert e.explain("i8 = 1", "a", NOW).attributes["tags"] == ["p", "q"]


def test_csv_with_schema(tmp_path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text(
        "customer_id,zip,rating,registered_at\n"
        "a,01234,4,2025-01-01T00:00:00Z\n"
        "b,99999,,2025-03-01T12:00:00Z\n"
        "c,,2.5,\n"
    )
    e = Engine()
    e.load_contacts(
        path,
        schema={"zip": "category", "rating": "float", "registered_at": "timestamp"},
    )
    cols = e.store.contacts.columns
    assert {n: c.kind for n, c in cols.items()} == {
        "zip": "category",
        "rating": "float",
        "registered_at": "timestamp",
    }
    assert e.segment('zip = "01234"', NOW).ids() == ["a"]  # the leading zero survives
    assert e.segment("rating < 3", NOW).ids() == ["c"]
    assert e.segment("registered_at > 2025-02-01", NOW).ids() == ["b"]
    assert e.segment("registered_at is null", NOW).ids() == ["c"]


def test_csv_schema_timestamp_accepts_dates(tmp_path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("customer_id,born\na,1990-05-01\nb,2001-01-01T10:00:00\n")
    e = Engine()
    e.load_contacts(path, schema={"born": "timestamp"})
    assert e.segment("born < 2000-01-01", NOW).ids() == ["a"]


def test_csv_without_schema_infers(tmp_path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("customer_id,rating\na,1\nb,2\n")
    e = Engine()
    e.load_contacts(path)
    assert e.store.contacts.columns["rating"].kind == "int"
    assert e.segment("rating = 2", NOW).ids() == ["b"]


def test_unknown_schema_kind_rejected(tmp_path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("customer_id,rating\na,1\n")
    with pytest.raises((InvalidInput, KeyError, ValueError)):
        Engine().load_contacts(path, schema={"rating": "decimal"})


def _contact_snapshot(e: Engine) -> tuple:
    return (
        e.stats()["contacts"],
        {n: c.kind for n, c in e.store.contacts.columns.items()},
        [e.store.contacts.profile(i) for i in range(e.stats()["contacts"])],
    )


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ({"customer_id": "c9", "rating": "high"}, "rating"),
        ({"customer_id": "c1", "rating": "high"}, "rating"),
        ({"customer_id": "c1", "rating": ["a"]}, "rating"),
        ({"customer_id": "c1", "city": ["a"]}, "city"),
        ({"customer_id": "c1", "rating": 4, "city": ["a"]}, "city"),
    ],
)
def test_type_mismatch_on_existing_column(eng: Engine, row: dict, column: str) -> None:
    before = _contact_snapshot(eng)
    with pytest.raises(InvalidInput) as info:
        eng.upsert_contacts([row])
    assert info.value.violations[0].where.startswith("contacts")
    assert info.value.violations[0].where.endswith(f".{column}")
    assert repr(column) in str(info.value)
    assert _contact_snapshot(eng) == before


def test_contacts_batch_errors(eng: Engine) -> None:
    before = _contact_snapshot(eng)
    with pytest.raises(InvalidInput, match=r"^contacts\[1\]\.customer_id: "):
        eng.upsert_contacts(
            [{"customer_id": "x", "rating": 1}, {"customer_id": None, "rating": 2}]
        )
    with pytest.raises(InvalidInput, match=r"^contacts\.customer_id: required column"):
        eng.upsert_contacts([{"rating": 1}])
    with pytest.raises(InvalidInput, match=r"^contacts\.Rating: column names"):
        eng.upsert_contacts([{"customer_id": "x", "Rating": 1}])
    with pytest.raises(InvalidInput, match=r"^contacts\.blob: unsupported type"):
        eng.upsert_contacts(pa.table({"customer_id": ["x"], "blob": [b"\x00"]}))
    with pytest.raises(InvalidInput, match="NULL tag"):
        eng.upsert_contacts([{"customer_id": "x", "tags": ["a", None]}])
    assert _contact_snapshot(eng) == before


def test_rejected_upsert_leaves_category_dictionary_unchanged(eng: Engine) -> None:
    eng.count('city = "Kazan"', NOW)
    before = (
        eng.stats()["memory_bytes"],
        len(eng.store.contacts.columns["city"].dictionary),
    )
    with pytest.raises(InvalidInput, match="rating"):
        eng.upsert_contacts([{"customer_id": "c1", "city": "Atlantis", "rating": "x"}])
    after = (
        eng.stats()["memory_bytes"],
        len(eng.store.contacts.columns["city"].dictionary),
    )
    assert after == before


def test_upsert_changes_only_given_values(eng: Engine) -> None:
    eng.upsert_contact("c1", rating=9)
    assert eng.store.contacts.profile(0) == {"city": "Kazan", "rating": 9}
    eng.upsert_contact("c2", rating=None)
    assert eng.segment("rating is null", NOW).ids() == ["c2"]
    eng.upsert_contact("c3", rating=None)
    assert eng.segment("rating is null", NOW).ids() == ["c2", "c3"]
    assert eng.segment("rating >= 0", NOW).ids() == ["c1"]


def test_upsert_moves_city_without_prior_query(eng: Engine) -> None:
    # No city query ran yet: the per-value bitmaps are built after the move.
    eng.upsert_contact("c1", city="Moscow")
    eng.upsert_contact("c3", city="Kazan")
    assert eng.segment('city = "Moscow"', NOW).ids() == ["c1", "c2"]
    assert eng.segment('city = "Kazan"', NOW).ids() == ["c3"]


def test_category_bitmaps_follow_an_upsert(eng: Engine) -> None:
    assert eng.count('city = "Kazan"', NOW) == 1  # builds the bitmaps
    assert eng.count('city = "Moscow"', NOW) == 1
    try:
        eng.upsert_contacts([{"customer_id": "c1", "rating": 8, "city": "Moscow"}])
    except TypeError as exc:
        raise AssertionError(f"upsert failed: {exc}") from exc
    assert eng.segment('city = "Kazan"', NOW).ids() == []
    assert eng.segment('city = "Moscow"', NOW).ids() == ["c1", "c2"]
    assert eng.segment("rating = 8", NOW).ids() == ["c1"]


def test_category_bitmaps_follow_upsert_from_null(eng: Engine) -> None:
    assert eng.count('city = "Kazan"', NOW) == 1
    eng.upsert_contact("c3", city="Kazan")  # old value NULL: nothing to remove
    eng.upsert_contact("c4", city="Kazan")  # a new contact
    assert eng.segment('city = "Kazan"', NOW).ids() == ["c1", "c3", "c4"]
    assert eng.segment("city is null", NOW).ids() == []


def test_same_contact_twice_in_one_batch_last_value_wins(eng: Engine) -> None:
    assert eng.count('city = "Kazan"', NOW) == 1
    eng.upsert_contacts(
        [{"customer_id": "c9", "city": "Omsk"}, {"customer_id": "c9", "city": "Perm"}]
    )
    assert eng.store.contacts.profile(3)["city"] == "Perm"
    assert eng.segment('city = "Perm"', NOW).ids() == ["c9"]
    assert eng.segment('city = "Omsk"', NOW).ids() == []


def test_tag_lists_replace_and_null() -> None:
    e = Engine()
    e.upsert_contacts(
        [
            {"customer_id": "a", "tags": ["vip", "new"]},
            {"customer_id": "b", "tags": ["new"]},
            {"customer_id": "c", "tags": None},
        ]
    )
    assert e.segment('tags contains_all ("vip", "new")', NOW).ids() == ["a"]
    assert e.segment('tags contains_any ("new")', NOW).ids() == ["a", "b"]
    e.upsert_contact("a", tags=["old"])
    assert e.segment('tags contains_any ("vip", "new")', NOW).ids() == ["b"]
    assert e.segment('tags = "old"', NOW).ids() == ["a"]
    e.upsert_contact("b", tags=None)
    assert e.segment("tags is null", NOW).ids() == ["b", "c"]
    assert e.segment('tags contains_any ("new")', NOW).ids() == []
    assert e.explain("tags is null", "a", NOW).attributes == {"tags": ["old"]}


def test_items_and_category_subtree() -> None:
    e = Engine()
    e.load_items(
        pa.table(
            {
                "item_id": ["i1", "i2", "i3"],
                "category": ["Pets/Cats/Dry food", "Pets/Dogs", "Outdoor/Tents"],
                "price": [100.0, 250.0, None],
                "colour": ["red", None, "red"],
            }
        )
    )
    assert e.stats()["items"] == 3
    e.append_events([ev("a", T0, item_id="i1"), ev("b", T0, item_id="i3")])
    assert e.segment('view(category = "Pets")', NOW).ids() == ["a"]
    assert e.segment('view(colour = "red", price < 200)', NOW).ids() == ["a"]
    e.upsert_items([{"item_id": "i3", "price": 50.0}])
    assert e.segment("view(price < 200)", NOW).ids() == ["a", "b"]
    with pytest.raises(InvalidInput, match=r"^items\.price: .*'price' is float"):
        e.upsert_items([{"item_id": "i1", "price": "cheap"}])
    assert e.segment("view(price < 200)", NOW).ids() == ["a", "b"]


BAD_VALUES = {"ts": "2025-13-01", "customer_id": None, "type": "BAD TYPE"}


@pytest.mark.parametrize("bad_column", sorted(BAD_VALUES))
def test_bulk_parquet_load_rejects_a_bad_row_in_a_later_chunk(
    eng: Engine, tmp_path, bad_column: str
) -> None:
    # load_events reads Parquet in chunks and validates all of them before applying
    # any: a bad row far into the file names its global row and changes nothing.
    rows = [ev(f"bulk{i}", f"2025-01-01T00:00:{i % 60:02d}Z") for i in range(250)]
    rows[230][bad_column] = BAD_VALUES[bad_column]
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=50)
    before = snapshot(eng)
    with pytest.raises(InvalidInput) as info:
        eng.load_events(path, rows_per_chunk=100)
    assert str(info.value).startswith(f"events[230].{bad_column}: "), str(info.value)
    assert snapshot(eng) == before


def test_bulk_parquet_load_in_chunks_equals_one_append(tmp_path) -> None:
    eng = Engine()
    rows = [
        ev(f"bulk{i % 40}", T0 + (i * 7919) % 1000, item_id=f"i{i % 7}")
        for i in range(500)
    ]
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=64)
    other = Engine()
    other.append_events(rows)
    eng.load_events(path, rows_per_chunk=100)
    q = 'view(item = "i3") count >= 2'
    assert eng.segment(q, now=T0 + 2000).ids() == other.segment(q, now=T0 + 2000).ids()
    assert eng.store.logs["view"].ts.tolist() == other.store.logs["view"].ts.tolist()
