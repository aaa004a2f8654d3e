"""Unit tests of the segment DSL: every doc example, operator, clause form and error."""

from __future__ import annotations

import pytest

import segd
from segd.errors import DslSyntaxError, InvalidInput, InvalidQuery
from segd.segments.dsl import format, parse

CATS = {"field": "category", "op": "=", "value": "Pets/Cats/Dry food"}

# The 13 examples of docs/segment-language.md, each with the AST it must produce.
DOC_EXAMPLES = [
    (
        'gender = "m" and age >= 35',
        {
            "and": [
                {"attr": "gender", "op": "=", "value": "m"},
                {"attr": "age", "op": ">=", "value": 35},
            ]
        },
    ),
    (
        'city in ("Moscow", "Kazan") and rating is null',
        {
            "and": [
                {"attr": "city", "op": "in", "value": ["Moscow", "Kazan"]},
                {"attr": "rating", "op": "is_null"},
            ]
        },
    ),
    (
        'view(category = "Pets/Cats/Dry food") count 2..5 between 2025-01-01 and '
        "2025-02-19",
        {
            "event": "view",
            "where": [CATS],
            "count": {"min": 2, "max": 5},
            "period": {"from": "2025-01-01", "to": "2025-02-19"},
        },
    ),
    (
        'view(category = "Pets/Cats/Dry food") count 2..5 from 60 to 30 days ago',
        {
            "event": "view",
            "where": [CATS],
            "count": {"min": 2, "max": 5},
            "period": {"ago": ["60d", "30d"]},
        },
    ),
    (
        'order(category in ("Outdoor/Tents", "Outdoor/Fishing rods")) in last 90 days',
        {
            "event": "order",
            "where": [
                {
                    "field": "category",
                    "op": "in",
                    "value": ["Outdoor/Tents", "Outdoor/Fishing rods"],
                }
            ],
            "period": {"last": "90d"},
        },
    ),
    (
        'add_to_cart(brand = "Apple") in last 7 days then no order within 7 days',
        {
            "event": "add_to_cart",
            "where": [{"field": "brand", "op": "=", "value": "Apple"}],
            "period": {"last": "7d"},
            "then_no": {"event": "order", "within": "7d"},
        },
    ),
    (
        'search(phrase = "winter tyres") in last 14 days and not order() in last '
        "14 days",
        {
            "and": [
                {
                    "event": "search",
                    "where": [{"field": "phrase", "op": "=", "value": "winter tyres"}],
                    "period": {"last": "14d"},
                },
                {"not": {"event": "order", "period": {"last": "14d"}}},
            ]
        },
    ),
    (
        'ad_click(advertiser = "A", campaign = "C") count >= 3 in last 30 days and '
        "not order()",
        {
            "and": [
                {
                    "event": "ad_click",
                    "where": [
                        {"field": "advertiser", "op": "=", "value": "A"},
                        {"field": "campaign", "op": "=", "value": "C"},
                    ],
                    "count": {"min": 3},
                    "period": {"last": "30d"},
                },
                {"not": {"event": "order"}},
            ]
        },
    ),
    (
        "not email_open() in last 30 days",
        {"not": {"event": "email_open", "period": {"last": "30d"}}},
    ),
    (
        "orders_count >= 3 and days_since_last_order between 52 and 112",
        {
            "and": [
                {"aggregate": "orders_count", "op": ">=", "value": 3},
                {
                    "aggregate": "days_since_last_order",
                    "op": "between",
                    "value": [52, 112],
                },
            ]
        },
    ),
    (
        "revenue >= 180000 and orders_count = 4",
        {
            "and": [
                {"aggregate": "revenue", "op": ">=", "value": 180000},
                {"aggregate": "orders_count", "op": "=", "value": 4},
            ]
        },
    ),
    (
        'rfm.code = "R5F5M5" or rfm.segment = "Loyal"',
        {
            "or": [
                {"rfm": "code", "op": "=", "value": "R5F5M5"},
                {"rfm": "segment", "op": "=", "value": "Loyal"},
            ]
        },
    ),
    ('in segment "vip"', {"segment": "vip"}),
]


def test_doc_has_thirteen_examples() -> None:
    assert len(DOC_EXAMPLES) == 13


@pytest.mark.parametrize(("text", "expected"), DOC_EXAMPLES)
def test_doc_example_parses_to_expected_ast(text: str, expected: dict) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("text", "expected"), DOC_EXAMPLES)
def test_doc_example_is_already_canonical_text(text: str, expected: dict) -> None:
    assert format(expected) == text
    assert parse(format(parse(text))) == parse(text)


def test_engine_reexports_parse_and_format() -> None:
    assert segd.parse("age > 1") == {"attr": "age", "op": ">", "value": 1}
    assert segd.format({"segment": "vip"}) == 'in segment "vip"'


# -- operators and values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "op_value"),
    [
        ("x = 1", {"op": "=", "value": 1}),
        ("x != 1", {"op": "!=", "value": 1}),
        ("x < 1", {"op": "<", "value": 1}),
        ("x <= 1", {"op": "<=", "value": 1}),
        ("x > 1", {"op": ">", "value": 1}),
        ("x >= 1", {"op": ">=", "value": 1}),
        ("x between 1 and 2.5", {"op": "between", "value": [1, 2.5]}),
        ('x in ("a", 2, true)', {"op": "in", "value": ["a", 2, True]}),
        ('x not in ("a")', {"op": "not_in", "value": ["a"]}),
        ("x is null", {"op": "is_null"}),
        ("x is not null", {"op": "is_not_null"}),
        ('x prefix "Pets/"', {"op": "prefix", "value": "Pets/"}),
        ('x contains "at"', {"op": "contains", "value": "at"}),
        ('x contains_any ("a", "b")', {"op": "contains_any", "value": ["a", "b"]}),
        ('x contains_all ("a")', {"op": "contains_all", "value": ["a"]}),
    ],
)
def test_every_attribute_operator(text: str, op_value: dict) -> None:
    ast = {"attr": "x", **op_value}
    assert parse(text) == ast
    assert format(ast) == text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("x = true", True),
        ("x = FALSE", False),
        ("x = -3", -3),
        ("x = 2.5", 2.5),
        ("x = 1e+16", 1e16),
        ("x = -0.5e-3", -0.0005),
        ("x = 2025-01-01", "2025-01-01"),
        ("x = 2025-01-01T10:30:00Z", "2025-01-01T10:30:00Z"),
        ('x = "say \\"hi\\" \\\\ \\n \\u00e9"', 'say "hi" \\ \n é'),
        ('x = ""', ""),
    ],
)
def test_values(text: str, value: object) -> None:
    ast = parse(text)
    assert ast == {"attr": "x", "op": "=", "value": value}
    assert type(ast["value"]) is type(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e16, "x = 1e+16"),
        (0.1, "x = 0.1"),
        (5.0, "x = 5.0"),
        (True, "x = true"),
        ("2025-01-01", 'x = "2025-01-01"'),  # a string, so quoted, unlike period bounds
        ('a"b\\c\nd\te\x01', 'x = "a\\"b\\\\c\\nd\\te\\u0001"'),
        ("\u2028", 'x = "\\u2028"'),
    ],
)
def test_format_values(value: object, text: str) -> None:
    ast = {"attr": "x", "op": "=", "value": value}
    assert format(ast) == text
    assert parse(text) == ast


# -- events: count, sum, period, then_no -----------------------------------------------


@pytest.mark.parametrize(
    ("clause", "count"),
    [
        ("count 2..5", {"min": 2, "max": 5}),
        ("count 3..3", {"min": 3, "max": 3}),
        ("count 0..4", {"max": 4}),
        ("count >= 3", {"min": 3}),
        ("count > 2", {"min": 3}),
        ("count = 4", {"min": 4, "max": 4}),
        ("count = 0", {"max": 0}),
        ("count < 1", {"max": 0}),
        ("count < 5", {"max": 4}),
        ("count <= 5", {"max": 5}),
        ("count >= 0", {"min": 0}),
    ],
)
def test_count_forms(clause: str, count: dict) -> None:
    assert parse(f"view() {clause}") == {"event": "view", "count": count}


@pytest.mark.parametrize("text", ["view()", "view() count >= 1", "view() count > 0"])
def test_count_at_least_once_is_the_default(text: str) -> None:
    assert parse(text) == {"event": "view"}


@pytest.mark.parametrize(
    ("count", "text"),
    [
        ({"min": 2, "max": 5}, "view() count 2..5"),
        ({"min": 4, "max": 4}, "view() count = 4"),
        ({"max": 0}, "view() count = 0"),
        ({"max": 3}, "view() count <= 3"),
        ({"min": 3}, "view() count >= 3"),
        ({"min": 0}, "view() count >= 0"),
        ({"min": 1}, "view()"),
    ],
)
def test_format_count(count: dict, text: str) -> None:
    assert format({"event": "view", "count": count}) == text


@pytest.mark.parametrize(
    ("clause", "period"),
    [
        ("in last 7 days", {"last": "7d"}),
        ("in last 1 day", {"last": "1d"}),
        ("in last 7d", {"last": "7d"}),
        ("in last 12 hours", {"last": "12h"}),
        ("in last 1 HOUR", {"last": "1h"}),
        ("in last 3 h", {"last": "3h"}),
        (
            "between 2025-01-01 and 2025-02-19",
            {"from": "2025-01-01", "to": "2025-02-19"},
        ),
        (
            "between 2025-01-01T10:30:00Z and 2025-01-01T11:00:00+00:00",
            {"from": "2025-01-01T10:30:00Z", "to": "2025-01-01T11:00:00+00:00"},
        ),
        ("from 2025-01-01", {"from": "2025-01-01"}),
        ("before 2025-01-01", {"to": "2025-01-01"}),
        ("from 60 to 30 days ago", {"ago": ["60d", "30d"]}),
        ("from 2 days to 12 hours ago", {"ago": ["2d", "12h"]}),
        ("from 48 to 0 hours ago", {"ago": ["48h", "0h"]}),
    ],
)
def test_period_forms(clause: str, period: dict) -> None:
    assert parse(f"view() {clause}") == {"event": "view", "period": period}
    assert parse(f"revenue > 0 {clause}") == {
        "aggregate": "revenue",
        "op": ">",
        "value": 0,
        "period": period,
    }


@pytest.mark.parametrize(
    ("period", "text"),
    [
        ({"last": "1d"}, "view() in last 1 day"),
        ({"last": "36h"}, "view() in last 36 hours"),
        ({"ago": ["60d", "30d"]}, "view() from 60 to 30 days ago"),
        ({"ago": ["2d", "12h"]}, "view() from 2 days to 12 hours ago"),
        ({"from": "2025-01-01"}, "view() from 2025-01-01"),
        ({"to": "2025-01-01T10:00:00Z"}, "view() before 2025-01-01T10:00:00Z"),
    ],
)
def test_format_period(period: dict, text: str) -> None:
    assert format({"event": "view", "period": period}) == text


@pytest.mark.parametrize(
    ("clause", "total"),
    [
        ("sum(amount) >= 1000", {"field": "amount", "min": 1000}),
        ("sum(amount) <= 99.5", {"field": "amount", "max": 99.5}),
        ("sum(amount) = 10", {"field": "amount", "min": 10, "max": 10}),
        ("sum(amount) between 10 and 20", {"field": "amount", "min": 10, "max": 20}),
        ("sum(price) <= -5", {"field": "price", "max": -5}),
    ],
)
def test_sum_forms(clause: str, total: dict) -> None:
    assert parse(f"order() {clause}") == {"event": "order", "sum": total}


def test_event_with_every_clause_prints_in_canonical_order() -> None:
    text = (
        'order(amount > 10, brand != "X") in last 30 days sum(amount) between 1 and 9 '
        'count 2..3 then no refund(order_id prefix "A") within 48 hours'
    )
    ast = {
        "event": "order",
        "where": [
            {"field": "amount", "op": ">", "value": 10},
            {"field": "brand", "op": "!=", "value": "X"},
        ],
        "period": {"last": "30d"},
        "count": {"min": 2, "max": 3},
        "sum": {"field": "amount", "min": 1, "max": 9},
        "then_no": {
            "event": "refund",
            "within": "48h",
            "where": [{"field": "order_id", "op": "prefix", "value": "A"}],
        },
    }
    assert parse(text) == ast
    assert format(ast) == (
        'order(amount > 10, brand != "X") count 2..3 sum(amount) between 1 and 9 '
        'in last 30 days then no refund(order_id prefix "A") within 48 hours'
    )


def test_then_no_with_empty_filters_and_filter_fields_named_like_keywords() -> None:
    assert parse("cart(from = 1, count = 2) then no order() within 1 day") == {
        "event": "cart",
        "where": [
            {"field": "from", "op": "=", "value": 1},
            {"field": "count", "op": "=", "value": 2},
        ],
        "then_no": {"event": "order", "within": "1d"},
    }


# -- boolean structure -----------------------------------------------------------------


A, B, C = ({"attr": n, "op": "=", "value": 1} for n in "abc")


@pytest.mark.parametrize(
    ("text", "ast"),
    [
        ("a = 1 or b = 1 and c = 1", {"or": [A, {"and": [B, C]}]}),
        ("(a = 1 or b = 1) and c = 1", {"and": [{"or": [A, B]}, C]}),
        ("not a = 1 and b = 1", {"and": [{"not": A}, B]}),
        ("not (a = 1 and b = 1)", {"not": {"and": [A, B]}}),
        ("not not a = 1", {"not": {"not": A}}),
        ("a = 1 and (b = 1 and c = 1)", {"and": [A, {"and": [B, C]}]}),
        ("a = 1 or (b = 1 or c = 1)", {"or": [A, {"or": [B, C]}]}),
        ("((a = 1))", A),
        ("a = 1 and b = 1 and c = 1", {"and": [A, B, C]}),
    ],
)
def test_precedence_and_parentheses(text: str, ast: dict) -> None:
    assert parse(text) == ast
    assert format(ast) == text.replace("((a = 1))", "a = 1")


def test_or_inside_and_is_parenthesised_but_and_inside_or_is_not() -> None:
    ast = {"or": [{"and": [A, B]}, {"not": {"or": [A, C]}}]}
    assert format(ast) == "a = 1 and b = 1 or not (a = 1 or c = 1)"
    assert parse(format(ast)) == ast


def test_keywords_are_case_insensitive() -> None:
    text = "NOT View() In Last 7 DAYS And Orders_Count >= 3 OR RFM.Code Is Not Null"
    assert parse(text) == {
        "or": [
            {
                "and": [
                    {"not": {"event": "View", "period": {"last": "7d"}}},
                    {"aggregate": "orders_count", "op": ">=", "value": 3},
                ]
            },
            {"rfm": "code", "op": "is_not_null"},
        ]
    }


def test_whitespace_and_newlines_are_free() -> None:
    assert parse("  a=1\n\tand\r\n b =1 ") == {"and": [A, B]}


def test_format_canonicalises_first() -> None:
    ast = {"and": [{"event": "view", "where": [], "count": {"min": 1}}]}
    assert format(ast) == "view()"
    with pytest.raises(InvalidQuery):
        format({"attr": "x", "op": "=~", "value": 1})


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        (
            'gender equals "m"',
            1,
            8,
            "expected a comparison operator after 'gender', got 'equals'",
        ),
        (
            'gender = "m" and age equals 3',
            1,
            22,
            "expected a comparison operator after 'age', got 'equals'",
        ),
        ("view(a = 1 and b = 2)", 1, 12, "expected ')' or ',' after filter, got 'and'"),
        (
            "view() cuont 2",
            1,
            8,
            "expected 'count', 'sum', 'in', 'between', 'from', 'before', 'then', "
            "'and', 'or', ')' or end of input, got 'cuont' (did you mean 'count'?)",
        ),
        (
            "a = 1 adn b = 2",
            1,
            7,
            "expected 'and', 'or', ')' or end of input, got 'adn' "
            "(did you mean 'and'?)",
        ),
        (
            'city inn ("a")',
            1,
            6,
            "expected a comparison operator after 'city', got 'inn' "
            "(did you mean 'in'?)",
        ),
        (
            "rfm.cod = 1",
            1,
            5,
            "expected an RFM field (code, r, f, m, segment) after 'rfm.', got 'cod' "
            "(did you mean 'code'?)",
        ),
        (
            "a = m",
            1,
            5,
            "expected a value (string, number, true, false or date) after '=', "
            "got 'm' (strings are double-quoted)",
        ),
        ("", 1, 1, "expected a condition, got end of input"),
        ("a = 1 or", 1, 9, "expected a condition, got end of input"),
        ("((a = 1)", 1, 9, "expected 'and', 'or' or ')', got end of input"),
        ("a = 1)", 1, 6, "unexpected ')' (no matching '(')"),
        ("a = 1\n  and b ~ 2", 2, 9, "unexpected character '~'"),
        ('a = 1 and\nb = "x', 2, 5, "unterminated string (no closing '\"')"),
        (
            'a = "\\q"',
            1,
            6,
            "unknown escape '\\q' (expected \\\", \\\\, \\n, \\t, \\r, "
            "\\uXXXX or \\UXXXXXXXX)",
        ),
        ("a = 2025-13-01", 1, 5, "invalid date '2025-13-01'"),
        ("a = 1e999", 1, 5, "number 1e999 is out of range"),
        ("view() count 5..2", 1, 14, "empty count range 5..2 (min > max)"),
        ("view() count < 0", 1, 14, "'count < 0' never matches (use 'count = 0')"),
        (
            "view() count >= 1.5",
            1,
            17,
            "expected a count after '>=' (an integer >= 0), got '1.5'",
        ),
        (
            "view() count 2 count 3",
            1,
            16,
            "expected '..' in a count range such as 2..5, got 'count'",
        ),
        ("view() count 2..3 count 3..4", 1, 19, "duplicate 'count' clause in event"),
        (
            "view() sum(amount) > 5",
            1,
            20,
            "sum bounds are inclusive: use '>=' instead",
        ),
        (
            "view() in last 7 dayz",
            1,
            18,
            "expected a unit (days or hours) after '7', "
            "got 'dayz' (did you mean 'day'?)",
        ),
        (
            "view() in last 1.5 days",
            1,
            16,
            "expected a duration after 'in last' (an integer >= 0), got '1.5'",
        ),
        (
            "view() between 2025-02-01 and 2025-01-01",
            1,
            16,
            "empty period: 2025-02-01 is not before 2025-01-01",
        ),
        (
            "view() from 30 to 60 days ago",
            1,
            13,
            "empty period: 'from 30d to 60d ago' (the first bound is the older one and "
            "must be longer)",
        ),
        (
            "view() then order within 7 days",
            1,
            13,
            "expected 'no' after 'then' (then no EVENT within DURATION), got 'order'",
        ),
        (
            "in segment vip",
            1,
            12,
            "expected a quoted segment name after 'in segment', got 'vip'",
        ),
        (
            "in vip",
            1,
            4,
            "expected 'segment' after 'in' (a segment reference is: in "
            "segment \"name\"), got 'vip'",
        ),
        (
            "view(a is null)",
            1,
            8,
            "operator 'is null' is not allowed for an event filter (expected one of =, "
            "!=, <, <=, >, >=, between, in, not in, prefix, contains)",
        ),
        (
            'orders_count prefix "a"',
            1,
            14,
            "operator 'prefix' is not allowed for orders_count (expected one of =, !=, "
            "<, <=, >, >=, between, in, not in, is null, is not null)",
        ),
        ('orders_count = "a"', 1, 1, "value: expected a number, got str 'a'"),
        ('rfm.r = "5"', 1, 1, "value: expected a number, got str '5'"),
        ("and = 1", 1, 1, "expected a condition, got 'and'"),
        (
            "x = 1 in last 7 days",
            1,
            7,
            "expected 'and', 'or', ')' or end of input, got 'in'",
        ),
    ],
)
def test_syntax_errors(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(DslSyntaxError) as caught:
        parse(text)
    error = caught.value
    assert (error.line, error.column, error.reason) == (line, column, message)
    assert str(error) == f"line {line}:{column}: {message}"
    assert error.text == text
    assert isinstance(error, InvalidInput)
    assert error.violations[0].where == f"line {line}:{column}"


def test_non_string_input_is_a_syntax_error() -> None:
    with pytest.raises(DslSyntaxError, match="expected DSL text"):
        parse(b"a = 1")  # type: ignore[arg-type]


def test_nesting_deeper_than_the_limit_is_too_complex() -> None:
    from segd.errors import TooComplex
    from segd.segments.limits import MAX_DEPTH

    assert parse("not " * (MAX_DEPTH - 1) + "a = 1")  # 32 levels: fine
    with pytest.raises(TooComplex) as caught:
        parse("not " * MAX_DEPTH + "a = 1")
    assert (caught.value.limit, caught.value.maximum) == ("MAX_DEPTH", MAX_DEPTH)
    assert caught.value.where == f"dsl line 1:{4 * MAX_DEPTH + 1}"
    # Parentheses count as levels of the text, and an AST deeper than its text is
    # refused too: each "(... or ...)" level adds an and/or pair to the AST.
    with pytest.raises(TooComplex):
        parse("(" * 40 + "a = 1" + ")" * 40)
    text = "a = 1"
    for _ in range(20):
        text = f"b = 1 and (c = 1 or {text})"
    with pytest.raises(TooComplex) as caught:
        parse(text)
    assert caught.value.where == "dsl" and caught.value.actual == 41


def test_text_refused_early_is_not_tokenized_to_its_end() -> None:
    import time

    from segd.errors import TooComplex

    start = time.perf_counter()
    with pytest.raises(TooComplex):
        parse("(" * 99_000)  # too deep at character 33: the rest is never read
    assert time.perf_counter() - start < 0.5
    with pytest.raises(TooComplex, match="MAX_DSL_CHARS"):
        parse(")" * 8_000_000)  # too long: refused before the first token
