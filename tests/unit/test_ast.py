"""Unit tests of segment AST validation: canonical form, exact error paths, helpers."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from segd.errors import InvalidInput, InvalidQuery
from segd.segments.ast import (
    AGGREGATE_OPS,
    AGGREGATES,
    ATTR_OPS,
    FILTER_OPS,
    RFM_FIELDS,
    canonical_key,
    parse_instant,
    validate,
    walk,
)

A = {"attr": "a", "op": "=", "value": 1}
B = {"attr": "b", "op": "is_null"}


def test_constants_match_the_contract() -> None:
    assert AGGREGATES == (
        "orders_count",
        "revenue",
        "avg_order_value",
        "days_since_last_order",
        "days_since_last_visit",
        "days_since_last_email_open",
    )
    assert ATTR_OPS == (
        "=", "!=", "<", "<=", ">", ">=", "between", "in", "not_in", "is_null",
        "is_not_null", "prefix", "contains", "contains_any", "contains_all",
    )  # fmt: skip
    assert FILTER_OPS == (
        "=", "!=", "<", "<=", ">", ">=", "between", "in", "not_in", "prefix", "contains",
    )  # fmt: skip
    assert set(AGGREGATE_OPS) == set(ATTR_OPS) - {
        "prefix",
        "contains",
        "contains_any",
        "contains_all",
    }
    assert RFM_FIELDS == ("code", "r", "f", "m", "segment")


# -- the doc's JSON examples ---------------------------------------------------------------


def test_doc_event_example_canonical_form() -> None:
    ast = {
        "event": "view",
        "where": [{"field": "category", "op": "=", "value": "Pets/Cats/Dry food"}],
        "period": {"from": "2025-01-01", "to": "2025-02-19"},
        "count": {"min": 2, "max": 5},
        "sum": {"field": "amount", "min": 1000},
        "then_no": {"event": "order", "within": "7d", "where": []},
    }
    expected = copy.deepcopy(ast)
    del expected["then_no"]["where"]  # empty lists are dropped
    assert validate(ast) == expected


@pytest.mark.parametrize(
    "ast",
    [
        {"attr": "age", "op": ">=", "value": 35},
        {"aggregate": "orders_count", "op": ">=", "value": 3},
        {
            "aggregate": "revenue",
            "op": "between",
            "value": [1000, 5000],
            "period": {"last": "365d"},
        },
        {"rfm": "code", "op": "=", "value": "R5F5M5"},
        {"rfm": "segment", "op": "in", "value": ["Loyal", "At risk"]},
        {"segment": "vip"},
        {"and": [A, B]},
        {"or": [A, B]},
        {"not": A},
        {"event": "order", "count": {"max": 0}},
        {"event": "view", "period": {"ago": ["60d", "30d"]}},
    ],
)
def test_doc_examples_are_canonical(ast: dict) -> None:
    assert validate(ast) == ast


# -- canonical form ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ast", "canonical"),
    [
        ({"event": "v", "where": []}, {"event": "v"}),
        ({"event": "v", "count": {"min": 1}}, {"event": "v"}),
        (
            {"event": "v", "count": {"min": 0, "max": 3}},
            {"event": "v", "count": {"max": 3}},
        ),
        ({"event": "v", "count": {}}, {"event": "v", "count": {"min": 0}}),
        (
            {"event": "v", "count": {"min": 0, "max": 0}},
            {"event": "v", "count": {"max": 0}},
        ),
        (
            {"event": "v", "then_no": {"event": "o", "within": "07d", "where": []}},
            {"event": "v", "then_no": {"event": "o", "within": "7d"}},
        ),
        (
            {"event": "v", "period": {"last": "007h"}},
            {"event": "v", "period": {"last": "7h"}},
        ),
        (
            {"event": "v", "period": {"ago": ["060d", "030d"]}},
            {"event": "v", "period": {"ago": ["60d", "30d"]}},
        ),
        ({"and": [A]}, A),
        ({"or": [{"and": [A]}, {"not": {"or": [B]}}]}, {"or": [A, {"not": B}]}),
        (
            {"attr": "a", "op": "in", "value": (1, 2)},
            {"attr": "a", "op": "in", "value": [1, 2]},
        ),
        ({"and": [{"and": [A, B]}, A]}, {"and": [{"and": [A, B]}, A]}),  # not flattened
    ],
)
def test_canonical_form(ast: dict, canonical: dict) -> None:
    assert validate(ast) == canonical
    assert validate(canonical) == canonical


def test_validate_leaves_its_input_alone_and_returns_new_dicts() -> None:
    ast = {"and": [{"event": "v", "where": [], "count": {"min": 1}}, copy.deepcopy(A)]}
    before = copy.deepcopy(ast)
    out = validate(ast)
    assert ast == before
    out["and"][1]["value"] = 99
    assert ast["and"][1]["value"] == 1


# -- errors --------------------------------------------------------------------------------


def _ops(ops: tuple[str, ...]) -> str:
    return ", ".join(ops)


NESTED = {
    "or": [
        A,
        {"not": {"and": [A, {"event": "v", "where": [{"field": "f", "op": "=~"}]}]}},
    ]
}


@pytest.mark.parametrize(
    ("ast", "where", "message"),
    [
        ([A], "", "expected a condition object, got list [{'attr': 'a', 'op': '=', "
         "'value': 1}]"),
        (
            {"foo": 1},
            "",
            "expected a condition with one of the keys and, or, not, attr, event, "
            "aggregate, rfm, segment, got keys ['foo']",
        ),
        (
            {"attr": "x", "event": "y"},
            "",
            "a condition has exactly one kind key, got ['attr', 'event']",
        ),
        (
            {"attr": "x", "op": "=~", "value": 1},
            "op",
            f"unknown op '=~' (expected one of {_ops(ATTR_OPS)})",
        ),
        ({"attr": "x", "op": 5, "value": 1}, "op",
         f"unknown op int 5 (expected one of {_ops(ATTR_OPS)})"),
        ({"attr": "x", "value": 1}, "op",
         f"missing (expected one of {_ops(ATTR_OPS)})"),
        (
            {"and": [A, A, {"event": "x", "where": [{"field": "f", "op": "=~"}]}]},
            "and[2].where[0].op",
            f"unknown op '=~' (expected one of {_ops(FILTER_OPS)})",
        ),
        (NESTED, "or[1].not.and[1].where[0].op",
         f"unknown op '=~' (expected one of {_ops(FILTER_OPS)})"),
        ({"attr": "x", "op": "is_null", "extra": 1}, "extra",
         "unknown key 'extra' (expected one of attr, op, value)"),
        ({"and": []}, "and", "expected at least one condition, got an empty list"),
        ({"and": {}}, "and", "expected a list of conditions, got dict {}"),
        ({"not": [A]}, "not", "expected a condition object, got list [{'attr': 'a', "
         "'op': '=', 'value': 1}]"),
        ({"attr": "x", "op": "is_null", "value": 1}, "value",
         "op 'is_null' takes no value"),
        ({"attr": "x", "op": "="}, "value", "missing (expected a value for op '=')"),
        ({"attr": "x", "op": "between", "value": [1, 2, 3]}, "value",
         "op 'between' expects [lo, hi], got 3 items"),
        ({"attr": "x", "op": "between", "value": 1}, "value",
         "op 'between' expects [lo, hi], got int 1"),
        ({"attr": "x", "op": "in", "value": []}, "value",
         "op 'in' expects a non-empty list, got []"),
        ({"attr": "x", "op": "not_in", "value": "a"}, "value",
         "op 'not_in' expects a non-empty list, got str 'a'"),
        ({"attr": "x", "op": "in", "value": [1, {}]}, "value[1]",
         "expected a scalar (string, number or boolean), got dict {}"),
        ({"attr": "x", "op": "contains_any", "value": [1]}, "value[0]",
         "expected a string, got int 1"),
        ({"attr": "x", "op": "prefix", "value": 1}, "value",
         "expected a string, got int 1"),
        ({"attr": "x", "op": "=", "value": None}, "value",
         "expected a scalar (string, number or boolean), got NoneType None"),
        ({"attr": "x", "op": "=", "value": float("nan")}, "value",
         "expected a finite number, got nan"),
        ({"attr": "1x", "op": "is_null"}, "attr",
         "expected an attribute name (an identifier [A-Za-z_][A-Za-z0-9_]*), got "
         "str '1x'"),
        ({"attr": "Revenue", "op": "is_null"}, "attr",
         "'Revenue' is a reserved word and cannot be an attribute name"),
        ({"event": "not"}, "event", "'not' is a reserved word and cannot be an event "
         "type"),
        ({"aggregate": "clv", "op": "is_null"}, "aggregate",
         f"unknown aggregate 'clv' (expected one of {_ops(AGGREGATES)})"),
        ({"aggregate": "revenue", "op": "prefix", "value": "1"}, "op",
         f"unknown op 'prefix' (expected one of {_ops(AGGREGATE_OPS)})"),
        ({"aggregate": "revenue", "op": "=", "value": "3"}, "value",
         "expected a number, got str '3'"),
        ({"aggregate": "revenue", "op": "=", "value": True}, "value",
         "expected a number, got bool True"),
        ({"rfm": "x", "op": "is_null"}, "rfm",
         "unknown RFM field 'x' (expected one of code, r, f, m, segment)"),
        ({"rfm": "r", "op": "in", "value": [5, "4"]}, "value[1]",
         "expected a number, got str '4'"),
        ({"rfm": "code", "op": "=", "value": 555}, "value",
         "expected a string, got int 555"),
        ({"segment": ""}, "segment", "expected a segment name, got ''"),
        ({"segment": 5}, "segment", "expected a string, got int 5"),
        ({"event": "v", "where": {}}, "where", "expected a list of filters, got dict {}"),
        ({"event": "v", "where": [{"field": "f", "op": "is_null"}]}, "where[0].op",
         f"unknown op 'is_null' (expected one of {_ops(FILTER_OPS)})"),
        ({"event": "v", "where": [{"op": "=", "value": 1}]}, "where[0].field",
         "missing (expected a field name)"),
        ({"event": "v", "where": [{"field": "f", "op": "=", "value": 1, "x": 0}]},
         "where[0].x", "unknown key 'x' (expected one of field, op, value)"),
        ({"event": "v", "period": {"last": "7 days"}}, "period.last",
         "expected a duration like '7d' or '12h', got str '7 days'"),
        ({"event": "v", "period": {"last": "\uff17d"}}, "period.last",
         "expected a duration like '7d' or '12h', got str '\uff17d'"),
        ({"event": "v", "period": {"last": "7d", "ago": ["2d", "1d"]}}, "period",
         "a period has exactly one of the forms {last}, {ago} or {from, to}, got keys "
         "['ago', 'last']"),
        ({"event": "v", "period": {}}, "period",
         "expected 'last', 'ago' or 'from' and/or 'to', got {}"),
        ({"event": "v", "period": {"from": "2025-02-01", "to": "2025-01-01"}}, "period",
         "'from' must be before 'to', got from='2025-02-01' to='2025-01-01'"),
        ({"event": "v", "period": {"from": "2025-01-01", "to": "2025-01-01T00:00:00Z"}},
         "period", "'from' must be before 'to', got from='2025-01-01' "
         "to='2025-01-01T00:00:00Z'"),
        ({"event": "v", "period": {"from": "01/02/2025"}}, "period.from",
         "expected an ISO date or datetime like '2025-01-01' or '2025-01-01T10:30:00Z', "
         "got str '01/02/2025'"),
        ({"event": "v", "period": {"to": "2025-02-30"}}, "period.to",
         "expected an ISO date or datetime like '2025-01-01' or '2025-01-01T10:30:00Z', "
         "got str '2025-02-30'"),
        ({"event": "v", "period": {"since": "2025-01-01"}}, "period.since",
         "unknown key 'since' (expected one of from, to)"),
        ({"event": "v", "period": {"ago": ["30d", "60d"]}}, "period.ago",
         "the first duration is the older bound and must be longer, got ['30d', '60d']"),
        ({"event": "v", "period": {"ago": ["24h", "1d"]}}, "period.ago",
         "the first duration is the older bound and must be longer, got ['24h', '1d']"),
        ({"event": "v", "period": {"ago": ["30d"]}}, "period.ago",
         "expected [older, newer] durations like ['60d', '30d'], got list ['30d']"),
        ({"event": "v", "period": {"ago": ["30x", "1d"]}}, "period.ago[0]",
         "expected a duration like '7d' or '12h', got str '30x'"),
        ({"event": "v", "count": {"min": -1}}, "count.min",
         "expected an integer >= 0, got int -1"),
        ({"event": "v", "count": {"max": 1.0}}, "count.max",
         "expected an integer >= 0, got float 1.0"),
        ({"event": "v", "count": {"min": True}}, "count.min",
         "expected an integer >= 0, got bool True"),
        ({"event": "v", "count": {"min": 5, "max": 2}}, "count",
         "min must be <= max, got min=5 max=2"),
        ({"event": "v", "count": {"at_least": 2}}, "count.at_least",
         "unknown key 'at_least' (expected one of min, max)"),
        ({"event": "v", "count": 2}, "count", "expected a count object, got int 2"),
        ({"event": "v", "sum": {"field": "amount"}}, "sum",
         "expected 'min' and/or 'max', got neither"),
        ({"event": "v", "sum": {"min": 1}}, "sum.field",
         "missing (expected a numeric field name such as 'amount')"),
        ({"event": "v", "sum": {"field": "amount", "min": "1"}}, "sum.min",
         "expected a number, got str '1'"),
        ({"event": "v", "sum": {"field": "amount", "min": 5, "max": 1}}, "sum",
         "min must be <= max, got min=5 max=1"),
        ({"event": "v", "then_no": {"event": "o"}}, "then_no.within",
         "missing (expected a duration such as '7d')"),
        ({"event": "v", "then_no": {"event": "o", "within": "1w"}}, "then_no.within",
         "expected a duration like '7d' or '12h', got str '1w'"),
        ({"event": "v", "then_no": {"within": "1d"}}, "then_no.event",
         "missing (expected an event type)"),
        ({"event": "v", "then_no": {"event": "o", "within": "1d", "count": {}}},
         "then_no.count", "unknown key 'count' (expected one of event, within, where)"),
        ({"event": "v", "then_no": {"event": "o", "within": "1d",
                                    "where": [{"field": "x", "op": "="}]}},
         "then_no.where[0].value", "missing (expected a value for op '=')"),
    ],
)  # fmt: skip
def test_validate_errors(ast: object, where: str, message: str) -> None:
    with pytest.raises(InvalidQuery) as caught:
        validate(ast)
    error = caught.value
    assert isinstance(error, InvalidInput)
    assert len(error.violations) == 1
    assert (error.violations[0].where, error.violations[0].message) == (where, message)
    assert str(error) == (f"{where}: {message}" if where else message)


def test_nesting_deeper_than_the_limit_is_too_complex() -> None:
    from segd.errors import TooComplex
    from segd.segments.limits import MAX_DEPTH

    ast: dict = A
    for _ in range(MAX_DEPTH):
        ast = {"not": ast}
    with pytest.raises(TooComplex) as caught:
        validate(ast)
    assert caught.value.where == ".".join(["not"] * MAX_DEPTH)
    assert (caught.value.limit, caught.value.maximum) == ("MAX_DEPTH", MAX_DEPTH)
    assert validate(ast["not"]) == ast["not"]  # MAX_DEPTH levels is fine
    # Far deeper input is refused at the limit, never recursed into.
    for _ in range(100_000):
        ast = {"not": ast}
    with pytest.raises(TooComplex):
        validate(ast)


def test_conditions_and_lists_over_the_limits_are_too_complex() -> None:
    from segd.errors import TooComplex
    from segd.segments.limits import MAX_CONDITIONS, MAX_LIST_VALUES

    ok = {"or": [A] * MAX_CONDITIONS}
    assert validate(ok) == ok
    with pytest.raises(TooComplex) as caught:
        validate({"or": [A] * 300_000})
    assert caught.value.limit == "MAX_CONDITIONS"
    assert caught.value.actual == 300_000  # refused before looking at the children
    values = list(range(MAX_LIST_VALUES + 1))
    with pytest.raises(TooComplex) as caught:
        validate({"attr": "a", "op": "in", "value": values})
    assert caught.value.limit == "MAX_LIST_VALUES"


@pytest.mark.parametrize(
    "ast, where",
    [
        ({"attr": "a", "op": "=", "value": "x\ud800y"}, "value"),
        ({"attr": "a", "op": "in", "value": ["ok", "\udfff"]}, "value[1]"),
        ({"segment": "vip\ud800"}, "segment"),
        ({"attr": "a", "op": "=", "value": 2**63}, "value"),
        ({"attr": "a", "op": "=", "value": -(10**400)}, "value"),
        ({"event": "v", "count": {"max": 2**64}}, "count.max"),
        ({"event": "v", "period": {"last": "1234567890d"}}, "period.last"),
    ],
)
def test_values_nothing_downstream_can_carry_are_rejected(ast, where) -> None:
    with pytest.raises(InvalidQuery) as caught:
        validate(ast)
    assert caught.value.violations[0].where == where
    assert len(str(caught.value)) < 300


# -- helpers -------------------------------------------------------------------------------


def test_walk_yields_every_condition_parents_first() -> None:
    event = {"event": "v", "where": [{"field": "f", "op": "=", "value": 1}]}
    ast = {"or": [{"and": [A, {"not": B}]}, event]}
    assert list(walk(ast)) == [ast, ast["or"][0], A, {"not": B}, B, event]
    assert list(walk(A)) == [A]


def test_canonical_key_is_sorted_compact_json() -> None:
    node = {"value": "é", "op": "=", "attr": "a"}
    assert canonical_key(node) == '{"attr":"a","op":"=","value":"é"}'
    assert canonical_key({"attr": "a", "op": "=", "value": "é"}) == canonical_key(node)
    assert canonical_key({"attr": "a", "op": "=", "value": 1}) != canonical_key(
        {"attr": "a", "op": "=", "value": 1.0}
    )


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2025-01-01", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01T10:30:00Z", datetime(2025, 1, 1, 10, 30, tzinfo=UTC)),
        ("2025-01-01T10:30:00", datetime(2025, 1, 1, 10, 30, tzinfo=UTC)),
        ("2025-01-01T10:30:00+03:00", datetime(2025, 1, 1, 7, 30, tzinfo=UTC)),
        ("2025-01-01T10:30:00.250Z", datetime(2025, 1, 1, 10, 30, 0, 250000, UTC)),
        ("2025-13-01", None),
        ("2025-1-01", None),
        ("20250101", None),
        ("2025-01-01 10:30:00", None),
    ],
)
def test_parse_instant(text: str, moment: datetime | None) -> None:
    assert parse_instant(text) == moment
