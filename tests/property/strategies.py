"""Hypothesis strategies for valid, canonical segment ASTs (docs/segment-language.md).

Every AST drawn here satisfies ``validate(ast) == ast``, so tests can compare printed,
parsed and evaluated forms with ``==``. Two modes:

- **generic** (``attrs=None``): random identifiers and arbitrary scalars (any text,
  floats of any magnitude, date-looking strings, booleans) to stress the DSL printer and
  parser;
- **typed**: pass the dataset's schema and the ASTs only use its names, with ops and
  values that fit each column's type, for differential tests over generated data.

``asts`` parameters:

- ``attrs``: attribute name -> type, one of ``int``, ``float``, ``bool``, ``timestamp``,
  ``category``, ``tags``. ``None``: generic attributes.
- ``values``: name (attribute or filter field) -> the values to draw for it (category
  vocabulary, tag vocabulary, or any list of scalars to pin a numeric column to values
  present in the data). Names without an entry get values drawn from their type.
- ``event_types``: event types to use; ``None``: random identifiers.
- ``filter_fields``: event field name -> type (same types; ``tags`` fields are skipped,
  filters have no tag-set ops). ``None``: generic fields. ``{}``: no ``where`` filters.
- ``sum_fields``: fields for ``sum(...)``; default: the int/float ``filter_fields``, or
  ``["amount"]`` in generic mode. ``[]`` disables ``sum``.
- ``include_rfm``, ``include_segments``, ``include_events``, ``include_aggregates``:
  which leaf kinds appear (attribute leaves appear unless ``attrs == {}``).
- ``segment_names``: names for ``{"segment": ...}``; ``None``: random non-empty text.
- ``max_depth``: condition levels in the deepest tree; 1 is a single leaf, 4 allows e.g.
  ``and`` -> ``or`` -> ``not`` -> leaf.
"""

from __future__ import annotations

from datetime import datetime

from hypothesis import strategies as st

from segd.segments.ast import (
    AGGREGATE_OPS,
    AGGREGATES,
    ATTR_OPS,
    COMPARE_OPS,
    FILTER_OPS,
    RESERVED_WORDS,
    RFM_FIELDS,
    RFM_OPS,
    parse_instant,
)

SearchStrategy = st.SearchStrategy

_NULL = ("is_null", "is_not_null")
TYPE_OPS: dict[str, tuple[str, ...]] = {
    "int": COMPARE_OPS + ("between", "in", "not_in") + _NULL,
    "float": COMPARE_OPS + ("between",) + _NULL,
    "bool": ("=", "!=", "in", "not_in") + _NULL,
    "timestamp": COMPARE_OPS + ("between",) + _NULL,
    "category": ("=", "!=", "in", "not_in", "prefix", "contains") + _NULL,
    "tags": ("contains_any", "contains_all") + _NULL,
    "any": ATTR_OPS,  # generic mode
}
RFM_SEGMENTS = ("Champions", "Loyal", "At risk", "Hibernating", "Lost", "New")
_RESERVED_ATTRS = RESERVED_WORDS | set(AGGREGATES)


def identifiers(reserved: frozenset[str] | set[str] = frozenset()) -> SearchStrategy:
    """DSL identifiers, never one of ``reserved`` (compared case-insensitively)."""
    return st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True).filter(
        lambda name: name.lower() not in reserved
    )


def iso_instants(
    start: datetime = datetime(2020, 1, 1), end: datetime = datetime(2030, 1, 1)
) -> SearchStrategy:
    """ISO date / datetime strings as the contract spells them (UTC or an offset)."""
    moments = st.datetimes(min_value=start, max_value=end)
    return st.builds(
        _spell_instant, moments, st.sampled_from(("date", "Z", "naive", "+03:00", "ms"))
    )


def _spell_instant(moment: datetime, style: str) -> str:
    if style == "date":
        return moment.strftime("%Y-%m-%d")
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if style == "ms":
        return f"{text}.{moment.microsecond // 1000:03d}Z"
    return text + {"Z": "Z", "naive": "", "+03:00": "+03:00"}[style]


def durations(unit: str | None = None, max_amount: int = 400) -> SearchStrategy:
    """Canonical durations such as ``"7d"`` / ``"12h"``."""
    units = st.just(unit) if unit else st.sampled_from("dh")
    return st.builds(lambda n, u: f"{n}{u}", st.integers(0, max_amount), units)


@st.composite
def periods(draw: st.DrawFn) -> dict:
    """One canonical period: ``last``, ``ago`` (older first) or absolute from/to."""
    form = draw(st.sampled_from(("last", "ago", "absolute")))
    if form == "last":
        return {"last": draw(durations())}
    if form == "ago":
        newer = draw(st.integers(0, 200))
        older = newer + draw(st.integers(1, 200))
        units = draw(st.sampled_from(("dd", "hh", "dh")))
        older_hours = older * (24 if units[0] == "d" else 1)
        newer_hours = newer * (24 if units[1] == "d" else 1)
        if older_hours <= newer_hours:
            units = "dd"
        return {"ago": [f"{older}{units[0]}", f"{newer}{units[1]}"]}
    low, high = draw(iso_instants()), draw(iso_instants())
    low_at, high_at = parse_instant(low), parse_instant(high)
    assert low_at is not None and high_at is not None
    if low_at > high_at:
        low, high, low_at, high_at = high, low, high_at, low_at
    bounds = draw(st.sampled_from(("from", "to", "both")))
    if bounds == "both" and low_at < high_at:
        return {"from": low, "to": high}
    return {"from": low} if bounds == "from" else {"to": high}


def generic_scalars() -> SearchStrategy:
    """Any JSON scalar the contract allows, biased toward printer edge cases."""
    return st.one_of(
        st.integers(-(2**63), 2**63 - 1),  # 64-bit, as the wire format
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.text(max_size=12),
        iso_instants(),
    )


def _typed_scalars(kind: str, vocabulary: list | None) -> SearchStrategy:
    if vocabulary:
        return st.sampled_from(vocabulary)
    return {
        "int": st.integers(-5, 200),
        "float": st.floats(-100, 10_000, allow_nan=False).map(lambda x: round(x, 2)),
        "bool": st.booleans(),
        "timestamp": iso_instants(),
        "category": st.text("abcxyz/ ", min_size=1, max_size=8),
        "tags": st.text("abcxyz", min_size=1, max_size=5),
        "any": generic_scalars(),
    }[kind]


@st.composite
def _op_value(
    draw: st.DrawFn, ops: tuple[str, ...], scalars: SearchStrategy, strings=None
) -> dict:
    """``{"op", "value"}`` for one of ``ops``; ``strings`` feeds prefix/contains*."""
    op = draw(st.sampled_from(ops))
    strings = strings if strings is not None else st.text(max_size=8)
    if op in _NULL:
        return {"op": op}
    if op in ("prefix", "contains"):
        text = draw(strings)
        return {"op": op, "value": text[: draw(st.integers(0, len(text)))]}
    if op in ("contains_any", "contains_all"):
        return {"op": op, "value": draw(st.lists(strings, min_size=1, max_size=3))}
    if op in ("in", "not_in"):
        return {"op": op, "value": draw(st.lists(scalars, min_size=1, max_size=4))}
    if op == "between":
        pair = [draw(scalars), draw(scalars)]
        try:
            pair.sort(key=lambda v: parse_instant(v) if isinstance(v, str) else v)
        except TypeError:
            pass  # mixed types in generic mode: any order is valid
        return {"op": op, "value": pair}
    return {"op": op, "value": draw(scalars)}


def _typed_op_value(
    kind: str, vocabulary: list | None, allowed: tuple[str, ...]
) -> SearchStrategy | None:
    ops = tuple(op for op in TYPE_OPS[kind] if op in allowed)
    if not ops:
        return None
    scalars = _typed_scalars(kind, vocabulary)
    strings = scalars if kind in ("category", "tags") else None
    if kind in ("category", "tags") and vocabulary:
        strings = st.sampled_from([v for v in vocabulary if isinstance(v, str)] or [""])
    return _op_value(ops, scalars, strings)


def _named(
    names: dict[str, str] | None,
    values: dict[str, list],
    allowed: tuple[str, ...],
    key: str,
    reserved: frozenset[str] | set[str],
) -> SearchStrategy | None:
    """``{key: name, op, value}`` over the typed ``names``, or generic names if None."""
    if names is None:
        body = _op_value(allowed, generic_scalars())
        return st.builds(lambda n, b: {key: n, **b}, identifiers(reserved), body)
    options = []
    for name, kind in sorted(names.items()):
        if kind not in TYPE_OPS:
            raise ValueError(
                f"{name}: unknown type {kind!r} (expected {list(TYPE_OPS)})"
            )
        body = _typed_op_value(kind, values.get(name), allowed)
        if body is not None:
            options.append(body.map(lambda b, n=name: {key: n, **b}))
    return st.one_of(options) if options else None


def _rfm() -> SearchStrategy:
    codes = st.builds(
        lambda r, f, m: f"R{r}F{f}M{m}", *(st.integers(1, 5) for _ in range(3))
    )
    scores = st.integers(1, 5)
    numeric = tuple(op for op in RFM_OPS if op not in ("prefix", "contains"))
    options = []
    for field in RFM_FIELDS:
        if field in ("r", "f", "m"):
            body = _op_value(numeric, scores)
        else:
            strings = codes if field == "code" else st.sampled_from(RFM_SEGMENTS)
            body = _op_value(RFM_OPS, strings, strings)
        options.append(body.map(lambda b, f=field: {"rfm": f, **b}))
    options.append(_rfm_entered(codes))
    return st.one_of(options)


@st.composite
def _rfm_entered(draw: st.DrawFn, codes: SearchStrategy) -> dict:
    """``rfm.entered "X" [from "Y"] [first time | again] [period]``."""
    cells = st.one_of(codes, st.sampled_from(RFM_SEGMENTS))
    node = {"rfm": "entered", "value": draw(cells)}
    if draw(st.booleans()):
        node["from"] = draw(cells)
    entry = draw(st.sampled_from([None, "first", "again"]))
    if entry:
        node["entry"] = entry
    if draw(st.booleans()):
        node["period"] = draw(periods())
    return node


@st.composite
def _aggregate(draw: st.DrawFn) -> dict:
    name = draw(st.sampled_from(AGGREGATES))
    numbers = st.one_of(st.integers(0, 400), st.floats(0, 1e6, allow_nan=False))
    node = {"aggregate": name, **draw(_op_value(AGGREGATE_OPS, numbers))}
    if draw(st.booleans()):
        node["period"] = draw(periods())
    return node


def _counts() -> SearchStrategy:
    """Canonical counts: never ``{"min": 1}``, ``min`` 0 only on its own."""
    bound = st.integers(0, 20)
    return st.one_of(
        st.integers(2, 20).map(lambda a: {"min": a}),
        st.just({"min": 0}),
        bound.map(lambda b: {"max": b}),
        st.tuples(st.integers(1, 10), st.integers(0, 10)).map(
            lambda p: {"min": p[0], "max": p[0] + p[1]}
        ),
    )


@st.composite
def _sums(draw: st.DrawFn, fields: list[str]) -> dict:
    numbers = st.one_of(st.integers(-10, 10_000), st.floats(0, 1e5, allow_nan=False))
    node: dict = {"field": draw(st.sampled_from(fields))}
    low, high = draw(numbers), draw(numbers)
    bounds = draw(st.sampled_from(("min", "max", "both")))
    if bounds == "both":
        node["min"], node["max"] = min(low, high), max(low, high)
    else:
        node[bounds] = low
    return node


@st.composite
def _event(
    draw: st.DrawFn,
    names: SearchStrategy,
    filters: SearchStrategy | None,
    sum_fields: list[str],
) -> dict:
    node: dict = {"event": draw(names)}
    where = draw(st.lists(filters, max_size=3)) if filters is not None else []
    if where:
        node["where"] = where
    if draw(st.booleans()):
        node["period"] = draw(periods())
    if draw(st.booleans()):
        node["count"] = draw(_counts())
    if sum_fields and draw(st.integers(0, 3)) == 0:
        node["sum"] = draw(_sums(sum_fields))
    if draw(st.integers(0, 3)) == 0:
        then: dict = {"event": draw(names), "within": draw(durations())}
        then_where = draw(st.lists(filters, max_size=2)) if filters is not None else []
        if then_where:
            then["where"] = then_where
        node["then_no"] = then
    return node


def asts(
    attrs: dict[str, str] | None = None,
    event_types: list[str] | None = None,
    filter_fields: dict[str, str] | None = None,
    include_rfm: bool = True,
    include_segments: bool = True,
    max_depth: int = 4,
    values: dict[str, list] | None = None,
    *,
    include_events: bool = True,
    include_aggregates: bool = True,
    sum_fields: list[str] | None = None,
    segment_names: list[str] | None = None,
) -> SearchStrategy:
    """Valid canonical segment ASTs; see the module docstring for the parameters."""
    values = values or {}
    leaves = []
    attr_leaf = _named(attrs, values, ATTR_OPS, "attr", _RESERVED_ATTRS)
    if attr_leaf is not None:
        leaves.append(attr_leaf)
    if include_events:
        event_names = (
            st.sampled_from(event_types) if event_types else identifiers(RESERVED_WORDS)
        )
        filters = _named(filter_fields, values, FILTER_OPS, "field", frozenset())
        if sum_fields is None:
            numeric = {"int", "float"}
            sum_fields = (
                ["amount"]
                if filter_fields is None
                else sorted(f for f, k in filter_fields.items() if k in numeric)
            )
        leaves.append(_event(event_names, filters, sum_fields))
    if include_aggregates:
        leaves.append(_aggregate())
    if include_rfm:
        leaves.append(_rfm())
    if include_segments:
        names = st.sampled_from(segment_names) if segment_names else st.text(min_size=1)
        leaves.append(names.map(lambda n: {"segment": n}))
    if not leaves:
        raise ValueError("asts(): every leaf kind is disabled")
    return _tree(_evenly(leaves), max_depth)


@st.composite
def _evenly(draw: st.DrawFn, choices: list[SearchStrategy]) -> dict:
    """One of ``choices``, each equally likely.

    ``st.one_of`` flattens nested ``one_of``s (even through ``map``), which would weight
    each leaf kind by its number of branches: five RFM fields would crowd out events.
    """
    return draw(choices[draw(st.integers(0, len(choices) - 1))])


def _tree(leaf: SearchStrategy, depth: int) -> SearchStrategy:
    """Leaves, or and/or (2-3 children) and not over trees one level shallower."""
    if depth <= 1:
        return leaf
    child = _tree(leaf, depth - 1)
    children = st.lists(child, min_size=2, max_size=3)
    return _evenly(
        [
            leaf,
            child.map(lambda c: {"not": c}),
            children.map(lambda cs: {"and": cs}),
            children.map(lambda cs: {"or": cs}),
        ]
    )
