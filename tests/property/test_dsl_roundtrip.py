"""Round trips between the AST and the DSL, and a fuzz of the parser.

Oracles: ``validate`` is the identity on canonical ASTs; ``parse(format(ast)) == ast``
for every canonical AST; ``parse`` raises nothing but ``DslSyntaxError`` on any text.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segd.errors import DslSyntaxError
from segd.segments.ast import canonical_key, validate, walk
from segd.segments.dsl import format, parse
from tests.property.strategies import asts

_SLOW_DRAWS = settings(suppress_health_check=[HealthCheck.too_slow])

SCHEMA = {
    "age": "int",
    "rating": "float",
    "is_subscribed": "bool",
    "birth_date": "timestamp",
    "city": "category",
    "interests": "tags",
}
VALUES = {
    "city": ["Moscow", "Kazan", "Saint Petersburg"],
    "interests": ["cats", "dogs", "fishing"],
    "category": ["Pets/Cats/Dry food", "Outdoor/Tents"],
}
FIELDS = {
    "category": "category",
    "price": "float",
    "amount": "float",
    "brand": "category",
}
EVENTS = ["view", "add_to_cart", "order", "search", "email_open"]


@_SLOW_DRAWS
@given(asts())
def test_validate_is_identity_on_canonical_asts(ast: dict) -> None:
    before = copy.deepcopy(ast)
    assert validate(ast) == ast
    assert ast == before  # validate returns a new dict and leaves its input alone


@_SLOW_DRAWS
@given(asts())
def test_parse_format_round_trip_generic(ast: dict) -> None:
    text = format(ast)
    assert parse(text) == ast, text
    assert format(parse(text)) == text  # the printed form is a fixed point


@_SLOW_DRAWS
@given(asts(SCHEMA, EVENTS, FIELDS, values=VALUES, segment_names=["vip", "churn"]))
def test_parse_format_round_trip_typed(ast: dict) -> None:
    assert validate(ast) == ast
    assert parse(format(ast)) == ast


def _subtrees(node: dict) -> list[dict]:
    """Every condition node, parents first: the oracle for ``walk``."""
    if "not" in node:
        return [node, *_subtrees(node["not"])]
    children = node.get("and") or node.get("or") or []
    return [node, *(sub for child in children for sub in _subtrees(child))]


@_SLOW_DRAWS
@given(asts(max_depth=3))
def test_canonical_key_is_stable_and_walk_sees_every_node(ast: dict) -> None:
    assert canonical_key(parse(format(ast))) == canonical_key(ast)
    assert canonical_key(copy.deepcopy(ast)) == canonical_key(ast)
    expected = _subtrees(ast)
    walked = list(walk(ast))
    assert len(walked) == len(expected)
    assert all(a is b for a, b in zip(walked, expected, strict=True))


@given(st.text(max_size=80))
def test_parse_random_text_raises_only_syntax_errors(text: str) -> None:
    try:
        ast = parse(text)
    except DslSyntaxError as exc:
        assert exc.line >= 1 and exc.column >= 1
        assert str(exc).startswith(f"line {exc.line}:{exc.column}: ")
    else:
        assert validate(ast) == ast


_PIECES = st.sampled_from(
    list('ab()=!<>,."\\- 019eE:TZ+\n')
    + ["and ", "or ", "not ", "in ", "count ", "sum(", "between ", "from ", "to "]
    + ["ago ", "last ", "days ", "then no ", "within ", "is ", "null ", "rfm."]
    + ["2025-01-01", "segment ", "x(", "orders_count ", "..", "h "]
)


@given(st.lists(_PIECES, max_size=25).map("".join))
def test_parse_token_soup_raises_only_syntax_errors(text: str) -> None:
    """Near-miss DSL built from real tokens reaches deeper parser paths than st.text."""
    try:
        ast = parse(text)
    except DslSyntaxError as exc:
        assert exc.text == text and exc.reason
    else:
        assert validate(ast) == ast
        assert parse(format(ast)) == ast


_ALPHABET = st.sampled_from(
    list(' ()=!<>,."\\-.0123456789') + ["and", "or", "not", "in", "count", "between"]
)


@_SLOW_DRAWS
@given(asts(max_depth=3), st.data())
def test_parse_mutated_dsl_raises_only_syntax_errors(ast: dict, data) -> None:
    text = format(ast)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        insert = data.draw(st.one_of(st.just(""), _ALPHABET, st.text(max_size=3)))
        text = text[:at] + insert + text[at + cut :]
    try:
        result = parse(text)
    except DslSyntaxError as exc:
        assert 1 <= exc.line <= text.count("\n") + 1
        assert 1 <= exc.column <= len(text.split("\n")[exc.line - 1]) + 1
    else:
        assert validate(result) == result
        assert parse(format(result)) == result


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_max_depth_bounds_generated_nesting(depth: int) -> None:
    def nesting(node: dict) -> int:
        if "not" in node:
            return 1 + nesting(node["not"])
        children = node.get("and") or node.get("or")
        return 1 + max(map(nesting, children)) if children else 1

    @given(asts(max_depth=depth))
    @_SLOW_DRAWS
    def check(ast: dict) -> None:
        assert nesting(ast) <= depth

    check()


def test_string_values_that_look_like_dates_stay_strings() -> None:
    ast = {"attr": "birth_date", "op": "between", "value": ["2025-01-01", "x"]}
    assert format(ast) == 'birth_date between "2025-01-01" and "x"'
    assert parse(format(ast)) == ast
