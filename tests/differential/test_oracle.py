"""The oracle's own tests: every semantic of docs/segment-language.md on a literal dataset.

Expected sets are worked out by hand from the rows below (Pilosa's naive.go idea), so a
differential failure can be blamed on the engine, not on the oracle. ``now`` is
2025-06-30T00:00:00Z unless a case says otherwise.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from segd.errors import InvalidQuery, SegmentNotFound
from tests.differential.oracle import SqlOracle

NOW = datetime(2025, 6, 30, tzinfo=UTC)
ALL = {"c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c99"}  # c99: only in events


def _ts(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


CONTACTS = [  # id, gender, birth_date, city, rating, registered_at, tags, email_subscribed
    ("c1", "m", date(1990, 1, 1), "Kazan", 5, "2024-01-01T00:00:00Z",
     ["vip", "newsletter"], True),
    ("c2", "f", date(1990, 6, 30), "Moscow", None, "2025-01-01T00:00:00Z",
     ["newsletter"], False),
    ("c3", "m", date(1990, 7, 1), None, 8, "2025-01-01T10:30:00Z", [], True),
    ("c4", None, None, "Kazan", 3, None, None, None),
    ("c5", "f", date(2000, 2, 29), "Moscow Oblast", 10, "2024-12-31T23:59:59Z",
     ["b2b"], True),
    ("c6", "m", date(1960, 12, 31), "Saint Petersburg", 1, "2023-06-01T00:00:00Z",
     ["vip"], False),
    ("c7", "f", date(2007, 6, 30), "Kazan", 7, "2025-06-29T00:00:00Z",
     ["newsletter", "b2b"], True),
    ("c8", None, date(1985, 3, 15), None, None, None, [], False),
]  # fmt: skip
ITEMS = [  # item_id, category, brand, price, in_stock, colour
    ("i1", "Outdoor/Tents/2-person", "Coleman", 100.0, True, "red"),
    ("i2", "Outdoor/Fishing rods/Spinning", "Shimano", 50.0, False, None),
    ("i3", "Pets/Cats/Dry food", "Whiskas", 10.0, True, "blue"),
    ("i4", "Outdoors/Hats/Caps", None, 5.0, True, "red"),  # a prefix trap for "Outdoor"
    ("i5", None, "Apple", 1000.0, True, None),
]
EVENT_COLUMNS = ("customer_id", "ts", "type", "item_id", "amount", "order_id", "phrase",
                 "advertiser", "campaign", "channel")  # fmt: skip
EVENTS = [  # "i404" is not in the catalog
    ("c1", "2025-06-29T12:00:00Z", "view", "i1"),
    ("c1", "2025-06-20T00:00:00Z", "view", "i1"),
    ("c1", "2025-06-25T00:00:00Z", "view", "i5"),
    ("c1", "2025-06-26T00:00:00Z", "view", "i5"),
    ("c1", "2025-04-30T00:00:00Z", "add_to_cart", "i1"),
    ("c1", "2025-05-01T00:00:00Z", "order", "i1", 100.0, "o1"),
    ("c1", "2025-05-01T00:00:00Z", "order", "i2", 50.0, "o1"),
    ("c1", "2025-06-01T00:00:00Z", "order", "i3", 10.0, None),
    ("c1", "2025-06-02T00:00:00Z", "order", "i3", 20.0, None),
    ("c1", "2025-06-16T00:00:00Z", "email_open", None, None, None, None, None, None,
     "email"),
    ("c2", "2025-06-23T00:00:00Z", "view", "i3"),
    ("c2", "2025-06-25T00:00:00Z", "add_to_cart", "i5"),
    ("c2", "2025-06-15T23:59:59.999Z", "email_open", None, None, None, None, None, None,
     "email"),  # floored to :59, so outside the last 14 days
    ("c2", "2025-06-28T00:00:00Z", "search", None, None, None, "winter tyres"),
    ("c2", "2025-06-29T23:59:59Z", "order", "i404", 300.0, "o2"),
    ("c3", "2025-06-20T00:00:00Z", "add_to_cart", "i2"),
    ("c3", "2025-06-27T00:00:00Z", "order", "i2", 50.0, "o3"),  # exactly 7 d later
    ("c3", "2025-06-10T00:00:00Z", "ad_click", None, None, None, None, "A", "C"),
    ("c3", "2025-06-11T00:00:00Z", "ad_click", None, None, None, None, "A", "C"),
    ("c3", "2025-06-12T00:00:00Z", "ad_click", None, None, None, None, "A", "C"),
    ("c3", "2025-06-13T00:00:00Z", "ad_click", None, None, None, None, "A", "D"),
    ("c3", "2025-06-14T00:00:00Z", "view", "i4"),
    ("c4", "2025-06-29T00:00:00Z", "view", None),
    ("c4", "2024-12-01T00:00:00Z", "order", "i1", 200.0, "o4"),
    ("c4", "2025-06-28T00:00:00Z", "add_to_cart", "i3"),
    ("c4", "2025-06-28T00:00:00Z", "order", "i3", 10.0, "o5"),  # same second as the cart
    ("c5", "2025-06-29T00:00:00Z", "view", "i2"),
    ("c5", "2025-06-29T06:00:00Z", "email_open", None, None, None, None, None, None,
     "email"),
    ("c6", "2024-07-01T00:00:00Z", "view", "i1"),
    ("c6", "2025-06-29T00:00:00Z", "ad_view", None),  # an ad view is not a visit
    ("c99", "2025-06-29T00:00:00Z", "view", "i1"),
    ("c99", "2025-06-28T00:00:00Z", "order", "i1", 100.0, "o9"),
]  # fmt: skip


def _tables() -> tuple[pa.Table, pa.Table, pa.Table]:
    cols = list(zip(*CONTACTS, strict=True))
    contacts = pa.table({
        "customer_id": pa.array(cols[0], pa.string()),
        "gender": pa.array(cols[1], pa.string()),
        "birth_date": pa.array(cols[2], pa.date32()),
        "city": pa.array(cols[3], pa.string()),
        "rating": pa.array(cols[4], pa.int64()),
        "registered_at": pa.array([_ts(t) for t in cols[5]], pa.timestamp("s", "UTC")),
        "tags": pa.array(cols[6], pa.list_(pa.string())),
        "email_subscribed": pa.array(cols[7], pa.bool_()),
    })  # fmt: skip
    names = ("item_id", "category", "brand", "price", "in_stock", "colour")
    items = pa.table(dict(zip(names, zip(*ITEMS, strict=True), strict=True)))
    rows = [row + (None,) * (len(EVENT_COLUMNS) - len(row)) for row in EVENTS]
    columns = dict(zip(EVENT_COLUMNS, map(list, zip(*rows, strict=True)), strict=True))
    columns["ts"] = pa.array([_ts(t) for t in columns["ts"]], pa.timestamp("ms", "UTC"))
    columns["amount"] = pa.array(columns["amount"], pa.float64())
    columns = {k: v if k in ("ts", "amount") else pa.array(v, pa.string())
               for k, v in columns.items()}  # fmt: skip
    return contacts, items, pa.table(columns)


@pytest.fixture(scope="module")
def oracle() -> SqlOracle:
    return SqlOracle(*_tables())


def attr(name: str, op: str, value: object = None) -> dict:
    node = {"attr": name, "op": op}
    return node if value is None else {**node, "value": value}


def where(field: str, op: str, value: object) -> dict:
    return {"field": field, "op": op, "value": value}


def agg(name: str, op: str, value: object = None, **extra: object) -> dict:
    node = {"aggregate": name, "op": op, **extra}
    return node if value is None else {**node, "value": value}


ATTRIBUTE_CASES = [
    (attr("gender", "=", "m"), {"c1", "c3", "c6"}),
    (attr("gender", "!=", "m"), {"c2", "c5", "c7"}),  # NULL never matches !=
    ({"not": attr("gender", "=", "m")}, {"c2", "c4", "c5", "c7", "c8", "c99"}),
    (attr("gender", "is_null"), {"c4", "c8", "c99"}),  # event-only contacts are NULL
    (attr("gender", "is_not_null"), {"c1", "c2", "c3", "c5", "c6", "c7"}),
    (attr("gender", "in", ["m", "f"]), {"c1", "c2", "c3", "c5", "c6", "c7"}),
    (attr("gender", "not_in", ["m"]), {"c2", "c5", "c7"}),
    (attr("city", "=", "Kazan"), {"c1", "c4", "c7"}),
    (attr("city", "prefix", "Moscow"), {"c2", "c5"}),
    (attr("city", "contains", "burg"), {"c6"}),
    (attr("rating", "between", [3, 7]), {"c1", "c4", "c7"}),  # inclusive
    (attr("rating", ">", 7), {"c3", "c5"}),
    (attr("rating", "<", 3), {"c6"}),
    ({"not": attr("rating", ">=", 5)}, {"c2", "c4", "c6", "c8", "c99"}),
    (attr("tags", "contains_any", ["vip", "b2b"]), {"c1", "c5", "c6", "c7"}),
    (attr("tags", "contains_all", ["newsletter", "b2b"]), {"c7"}),
    (attr("registered_at", ">=", "2025-01-01"), {"c2", "c3", "c7"}),  # midnight UTC
    (attr("registered_at", "<", "2025-01-01"), {"c1", "c5", "c6"}),
    (attr("registered_at", ">=", "2025-01-01T10:30:00Z"), {"c3", "c7"}),
    (attr("registered_at", "between", ["2024-12-31T23:59:59Z", "2025-01-01"]),
     {"c2", "c5"}),
    (attr("email_subscribed", "=", True), {"c1", "c3", "c5", "c7"}),
    (attr("email_subscribed", "!=", True), {"c2", "c6", "c8"}),
    # full years: c2's birthday is today (35), c3's is tomorrow (34, date_diff says 35)
    (attr("age", ">=", 35), {"c1", "c2", "c6", "c8"}),
    (attr("age", "=", 34), {"c3"}),
    (attr("age", "=", 18), {"c7"}),
    ({"and": [attr("gender", "=", "m"), attr("age", ">=", 35)]}, {"c1", "c6"}),
    ({"or": [attr("gender", "is_null"), attr("gender", "is_not_null")]}, ALL),
]  # fmt: skip


@pytest.mark.parametrize(("ast", "expected"), ATTRIBUTE_CASES)
def test_attribute_conditions(oracle: SqlOracle, ast: dict, expected: set) -> None:
    assert oracle.members(ast, NOW) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [("2025-02-28T23:59:59Z", 24), ("2025-03-01T00:00:00Z", 25)],
)
def test_age_of_a_29_february_birthday(
    oracle: SqlOracle, now: str, expected: int
) -> None:
    assert oracle.members(attr("age", "=", expected), _ts(now)) == {"c5"}


OUTDOOR = where("category", "=", "Outdoor")
EVENT_CASES = [
    # item_id is item; an order's count counts orders: c1's o1 has two lines, and its
    # two lines without an order id are an order each (3 orders, 4 lines)
    ({"event": "view", "where": [where("item_id", "=", "i1")]}, {"c1", "c6", "c99"}),
    ({"event": "order", "count": {"min": 3}}, {"c1"}),
    ({"event": "order", "count": {"min": 4}}, set()),
    ({"event": "order", "count": {"min": 2}}, {"c1", "c4"}),
    ({"event": "order", "where": [where("item", "in", ["i1", "i2"])],
      "count": {"min": 2}}, set()),  # two lines of o1: one order
    ({"event": "order", "where": [where("item", "in", ["i1", "i2"])],
      "count": {"max": 1}}, ALL),
    ({"event": "order", "where": [where("item", "=", "i3")], "count": {"min": 2}},
     {"c1"}),  # two lines without an order id: two orders
    ({"event": "view"}, {"c1", "c2", "c3", "c4", "c5", "c6", "c99"}),
    ({"not": {"event": "view"}}, {"c7", "c8"}),
    ({"event": "view", "count": {"max": 0}}, {"c7", "c8"}),  # no events at all
    ({"event": "view", "period": {"last": "1d"}}, {"c1", "c4", "c5", "c99"}),
    ({"event": "view", "period": {"last": "10d"}}, {"c1", "c2", "c4", "c5", "c99"}),
    ({"event": "view", "period": {"last": "12h"}}, {"c1"}),  # from bound inclusive
    ({"event": "view", "period": {"from": "2025-06-20", "to": "2025-06-23"}}, {"c1"}),
    ({"event": "view", "period": {"ago": ["10d", "1d"]}}, {"c1", "c2"}),  # to exclusive
    ({"event": "view", "period": {"from": "2025-06-29T06:00:00Z"}}, {"c1"}),
    ({"event": "view", "where": [OUTDOOR]}, {"c1", "c5", "c6", "c99"}),  # not Outdoors/
    ({"event": "view", "where": [where("category", "=", "Outdoor/Tents")]},
     {"c1", "c6", "c99"}),
    # != covers the sub-tree and needs a category: c1's i5 has none, c4's view no item
    ({"event": "view", "where": [where("category", "!=", "Outdoor")]}, {"c2", "c3"}),
    ({"event": "view", "where": [where("category", "not_in", ["Outdoor", "Pets"])]},
     {"c3"}),
    ({"event": "view", "where": [where("category", "in", ["Pets/Cats", "Outdoors"])]},
     {"c2", "c3"}),
    ({"event": "view", "where": [where("category", "prefix", "Outdoor")]},
     {"c1", "c3", "c5", "c6", "c99"}),  # prefix is a plain string test
    ({"event": "order", "where": [OUTDOOR]}, {"c1", "c3", "c4", "c99"}),
    ({"event": "order", "where": [where("item", "=", "i404")]}, {"c2"}),
    ({"event": "order", "where": [where("brand", "!=", "Shimano")]},
     {"c1", "c4", "c99"}),  # c2's item is not in the catalog: no brand
    ({"event": "view", "where": [where("in_stock", "=", False)]}, {"c5"}),
    ({"event": "view", "where": [where("colour", "in", ["red"])]},
     {"c1", "c3", "c6", "c99"}),
    ({"event": "view", "where": [where("price", "between", [50, 100])]},
     {"c1", "c5", "c6", "c99"}),
    ({"event": "view", "where": [where("brand", "=", "Apple")], "count": {"min": 2},
      "period": {"last": "30d"}}, {"c1"}),
    ({"event": "view", "where": [where("brand", "=", "Apple")], "count": {"min": 3}},
     set()),
    ({"event": "order", "where": [where("amount", ">=", 100)]},
     {"c1", "c2", "c4", "c99"}),
    ({"event": "ad_click", "where": [where("advertiser", "=", "A"),
      where("campaign", "=", "C")], "count": {"min": 3}, "period": {"last": "30d"}},
     {"c3"}),
    ({"event": "ad_click", "where": [where("campaign", "=", "C")],
      "count": {"min": 4}}, set()),
    ({"event": "search", "where": [where("phrase", "=", "winter tyres")],
      "period": {"last": "14d"}}, {"c2"}),
    ({"event": "search", "where": [where("phrase", "contains", "tyres")]}, {"c2"}),
    ({"event": "view", "where": [where("phrase", "!=", "x")]}, set()),  # NULL prop
    ({"event": "view", "count": {"min": 1, "max": 1}},
     {"c2", "c3", "c4", "c5", "c6", "c99"}),
    ({"event": "view", "count": {"max": 1}},
     {"c2", "c3", "c4", "c5", "c6", "c99", "c7", "c8"}),  # min defaults to 0 here
    # 14 days back is 2025-06-16T00:00:00 (inside); c2's .999 s is floored out
    ({"event": "email_open", "period": {"last": "14d"}}, {"c1", "c5"}),
    ({"not": {"event": "email_open", "period": {"last": "14d"}}},
     {"c2", "c3", "c4", "c6", "c7", "c8", "c99"}),
    ({"event": "order", "sum": {"field": "amount", "min": 150}}, {"c1", "c2", "c4"}),
    ({"event": "order", "sum": {"field": "amount", "max": 100}}, {"c3", "c99"}),
    ({"event": "order", "sum": {"field": "amount", "max": 100}, "count": {"max": 10}},
     {"c3", "c99", "c5", "c6", "c7", "c8"}),  # sum 0 for contacts without orders
    ({"event": "order", "sum": {"field": "amount", "min": 100},
      "period": {"last": "30d"}}, {"c2", "c99"}),
    ({"event": "order", "sum": {"field": "price", "min": 1000}}, set()),
    ({"and": [{"event": "view", "period": {"last": "10d"}},
              {"not": {"event": "order", "period": {"last": "14d"}}}]}, {"c1", "c5"}),
]  # fmt: skip


@pytest.mark.parametrize(("ast", "expected"), EVENT_CASES)
def test_event_conditions(oracle: SqlOracle, ast: dict, expected: set) -> None:
    assert oracle.members(ast, NOW) == expected


CART = "add_to_cart"
THEN_NO_CASES = [
    # c1: order 1 d after its cart; c2: order 4 d after; c3: exactly 7 d after (outside
    # [t, t + 7d), the cart survives); c4: order in the same second (inside)
    ({"event": CART, "then_no": {"event": "order", "within": "7d"}}, {"c3"}),
    ({"event": CART, "period": {"last": "7d"},
      "then_no": {"event": "order", "within": "7d"}}, set()),
    ({"event": CART, "then_no": {"event": "order", "within": "24h"}},
     {"c1", "c2", "c3"}),  # c1's order is exactly 24 h later
    ({"event": CART, "then_no": {"event": "order", "within": "7d",
                                 "where": [where("category", "=", "Pets")]}},
     {"c1", "c2", "c3"}),
    ({"event": CART, "count": {"max": 0},
      "then_no": {"event": "order", "within": "7d"}}, ALL - {"c3"}),
]  # fmt: skip


@pytest.mark.parametrize(("ast", "expected"), THEN_NO_CASES)
def test_then_no(oracle: SqlOracle, ast: dict, expected: set) -> None:
    assert oracle.members(ast, NOW) == expected


NO_ORDERS = {"c5", "c6", "c7", "c8"}
AGGREGATE_CASES = [
    # orders: c1 = o1 (2 lines) + 2 lines without order_id = 3; c4 = 2; others 1
    (agg("orders_count", ">=", 3), {"c1"}),
    (agg("orders_count", "=", 2), {"c4"}),
    (agg("orders_count", "=", 0), NO_ORDERS),
    (agg("orders_count", "!=", 1), {"c1", "c4"} | NO_ORDERS),
    # revenue: c1 180, c2 300, c3 50, c4 210, c99 100
    (agg("revenue", ">=", 180), {"c1", "c2", "c4"}),
    (agg("revenue", "=", 0), NO_ORDERS),
    (agg("revenue", "between", [50, 100]), {"c3", "c99"}),
    (agg("revenue", ">=", 100, period={"last": "30d"}), {"c2", "c99"}),
    # avg: c1 60, c2 300, c3 50, c4 105, c99 100; NULL without orders
    (agg("avg_order_value", ">=", 100), {"c2", "c4", "c99"}),
    (agg("avg_order_value", "<", 60), {"c3"}),
    (agg("avg_order_value", "is_null"), NO_ORDERS),
    ({"not": agg("avg_order_value", ">=", 100)}, {"c1", "c3"} | NO_ORDERS),
    # last order: c1 06-02 (28 d), c2 06-29T23:59:59 (0), c3 06-27 (3), c4/c99 06-28 (2)
    (agg("days_since_last_order", "=", 0), {"c2"}),
    (agg("days_since_last_order", "=", 28), {"c1"}),
    (agg("days_since_last_order", "between", [2, 3]), {"c3", "c4", "c99"}),
    (agg("days_since_last_order", "is_null"), NO_ORDERS),
    (agg("days_since_last_order", "is_null", period={"last": "7d"}),
     {"c1"} | NO_ORDERS),
    # last visit (on-site events only): c1 0, c2 0, c3 3, c4 1, c6 364 (its ad view
    # yesterday is no visit), c99 1; c5 1 (its email open 18 h ago is no visit)
    (agg("days_since_last_visit", ">=", 1), {"c3", "c4", "c5", "c6", "c99"}),
    (agg("days_since_last_visit", "=", 0), {"c1", "c2"}),
    (agg("days_since_last_visit", "<=", 1, period={"last": "2d"}),
     {"c1", "c2", "c4", "c5", "c99"}),
    (agg("days_since_last_visit", ">", 300), {"c6"}),
    (agg("days_since_last_visit", "is_null"), {"c7", "c8"}),
    # last email open: c1 exactly 14 d, c2 14 d + 1 s, c5 18 h
    (agg("days_since_last_email_open", "=", 14), {"c1", "c2"}),
    (agg("days_since_last_email_open", "<=", 13), {"c5"}),
]  # fmt: skip


@pytest.mark.parametrize(("ast", "expected"), AGGREGATE_CASES)
def test_aggregates(oracle: SqlOracle, ast: dict, expected: set) -> None:
    assert oracle.members(ast, NOW) == expected


def test_epoch_seconds_now_equals_datetime(oracle: SqlOracle) -> None:
    ast = {"event": "view", "period": {"last": "1d"}}
    assert oracle.members(ast, NOW.timestamp()) == oracle.members(ast, NOW)


SEGMENTS = {
    "men": attr("gender", "=", "m"),
    "men35": {"and": [{"segment": "men"}, attr("age", ">=", 35)]},
    "loop_a": {"segment": "loop_b"},
    "loop_b": {"not": {"segment": "loop_a"}},
}


def test_segment_references_are_inlined(oracle: SqlOracle) -> None:
    assert oracle.members({"segment": "men35"}, NOW, SEGMENTS) == {"c1", "c6"}
    assert oracle.members({"not": {"segment": "men"}}, NOW, SEGMENTS) == ALL - {
        "c1",
        "c3",
        "c6",
    }


def test_segment_reference_errors(oracle: SqlOracle) -> None:
    with pytest.raises(SegmentNotFound):
        oracle.members({"segment": "nope"}, NOW, SEGMENTS)
    with pytest.raises(InvalidQuery, match="cycle"):
        oracle.members({"segment": "loop_a"}, NOW, SEGMENTS)


def test_rfm_is_not_implemented_yet(oracle: SqlOracle) -> None:
    with pytest.raises(NotImplementedError):
        oracle.members({"rfm": "code", "op": "=", "value": "R5F5M5"}, NOW)


@pytest.mark.parametrize(
    "ast",
    [
        {"attr": "gender", "op": "=", "value": "m", "extra": 1},
        {"attr": "gendr", "op": "=", "value": "m"},
        {"attr": "rating", "op": "=", "value": "5"},
        {"attr": "city", "op": "contains_any", "value": ["x"]},
        {"event": "view", "where": [where("colr", "=", "red")]},
        {"event": "view", "sum": {"field": "phrase", "min": 1}},
        {"event": "view", "period": {"last": "7w"}},
        {"and": []},
        {"attr": "gender", "op": "=", "value": "m", "not": {}},
    ],
)
def test_invalid_queries_are_rejected(oracle: SqlOracle, ast: dict) -> None:
    with pytest.raises(InvalidQuery):
        oracle.members(ast, NOW)


def test_naive_now_is_refused(oracle: SqlOracle) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        oracle.members({"event": "view"}, datetime(2025, 6, 30))


def test_to_sql_is_one_query(oracle: SqlOracle) -> None:
    sql = oracle.to_sql({"and": [attr("gender", "=", "m"), {"event": "view"}]}, NOW)
    assert sql.startswith("WITH universe AS") and sql.count(";") == 0
