"""The segment AST: validation against docs/segment-language.md and its canonical form.

Every interface (DSL, gRPC, RFM, triggers) hands the planner a plain ``dict``; this
module is the one place that decides whether such a dict is a segment and how it is
spelled. The canonical form exists so that equal segments are equal dicts
(``canonical_key`` lets the planner evaluate an identical sub-expression once) and so
that ``parse(format(ast)) == ast``.

Canonical form, beyond the contract's own rules:

- empty ``where`` lists are dropped; ``count`` is dropped when it is ``{"min": 1}``;
- ``count``'s ``min`` of 0 is dropped when a ``max`` is present (``{"min": 0}`` alone
  and ``{}`` both become ``{"min": 0}``): a zero lower bound is no bound;
- an ``and`` / ``or`` with a single child is that child (the DSL cannot spell it);
- durations lose leading zeros (``"07d"`` -> ``"7d"``); list values become lists.

Names (attributes, events, filter and sum fields) must be DSL identifiers
(``[A-Za-z_][A-Za-z0-9_]*``), so that every valid AST can be printed as text; ``and``,
``or``, ``not`` and ``in`` cannot name an attribute or event, and an attribute cannot be
named like an aggregate (all case-insensitively, as the DSL reads them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from segd.errors import InvalidQuery, TooComplex, quoted, shorten
from segd.segments.limits import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_FILTERS,
    MAX_LIST_VALUES,
    Budget,
    too_deep,
    too_many_conditions,
    too_many_values,
)
from segd.timeutil import (  # noqa: F401 (re-exported for the lexer and dsl)
    ISO_PATTERN,
    ISO_RE,
    duration_hours,
    parse_iso,
)

AGGREGATES: tuple[str, ...] = (
    "orders_count",
    "revenue",
    "avg_order_value",
    "days_since_last_order",
    "days_since_last_visit",
    "days_since_last_email_open",
)
COMPARE_OPS: tuple[str, ...] = ("=", "!=", "<", "<=", ">", ">=")
ATTR_OPS: tuple[str, ...] = COMPARE_OPS + (
    "between",
    "in",
    "not_in",
    "is_null",
    "is_not_null",
    "prefix",
    "contains",
    "contains_any",
    "contains_all",
)
FILTER_OPS: tuple[str, ...] = COMPARE_OPS + (
    "between",
    "in",
    "not_in",
    "prefix",
    "contains",
)
AGGREGATE_OPS: tuple[str, ...] = COMPARE_OPS + (
    "between",
    "in",
    "not_in",
    "is_null",
    "is_not_null",
)
# RFM fields are plain strings or numbers, never tag sets.
RFM_OPS: tuple[str, ...] = tuple(
    op for op in ATTR_OPS if op not in ("contains_any", "contains_all")
)
RFM_FIELDS: tuple[str, ...] = ("code", "r", "f", "m", "segment")
RFM_NUMERIC_FIELDS: frozenset[str] = frozenset({"r", "f", "m"})
# `{"rfm": "entered", "value": X, "from": Y, "entry": "first"|"again", "period": P}`:
# contacts whose RFM segment (or code) became X (from Y) in the period (docs/rfm.md).
RFM_ENTERED = "entered"
RFM_ENTRIES: tuple[str, ...] = ("first", "again")
KINDS: tuple[str, ...] = (
    "and",
    "or",
    "not",
    "attr",
    "event",
    "aggregate",
    "rfm",
    "segment",
)
NULL_OPS: frozenset[str] = frozenset({"is_null", "is_not_null"})
LIST_OPS: frozenset[str] = frozenset(
    {"in", "not_in", "between", "contains_any", "contains_all"}
)
RESERVED_WORDS: frozenset[str] = frozenset({"and", "or", "not", "in"})
# Event filter fields spelled as the input column: the canonical form uses the name.
FIELD_ALIASES: dict[str, str] = {"item_id": "item"}

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# At most 9 digits: 999,999,999 days still fits every clock computation (the looser
# timeutil.DURATION_RE is for other durations).
DURATION_RE = re.compile(r"([0-9]{1,9})([dh])")
INT_MAX = 2**63 - 1  # integers are 64-bit signed, as in the wire format
# Durations and ISO-8601 times are defined once, in segd.timeutil (ISO_PATTERN is shared
# with the lexer: every period bound validate accepts prints as a bare DATE).

Node = dict[str, Any]


class _State:
    """What one validation counts: leaf conditions so far, and the caller's budget."""

    __slots__ = ("leaves", "budget")

    def __init__(self, budget: Budget | None) -> None:
        self.leaves = 0
        self.budget = budget


def validate(ast: Any, budget: Budget | None = None) -> Node:
    """Check ``ast`` against the contract and return its canonical form as a new dict.

    The input is not modified. Raises ``InvalidQuery`` whose violation ``where`` is a
    path into the input such as ``and[2].where[0].op`` ("" for the root node itself), or
    ``TooComplex`` over a limit of ``segd.segments.limits`` (depth is checked before
    descending, so no input can exhaust the stack; conditions before each child list).
    """
    return _condition(ast, "", 1, _State(budget))


def measure(ast: Node) -> tuple[int, int]:
    """(depth, leaf conditions) of a canonical AST, without recursion."""
    depth = leaves = 0
    stack = [(ast, 1)]
    while stack:
        node, level = stack.pop()
        depth = max(depth, level)
        if "and" in node or "or" in node:
            stack.extend((c, level + 1) for c in node.get("and") or node["or"])
        elif "not" in node:
            stack.append((node["not"], level + 1))
        else:
            leaves += 1
    return depth, leaves


def walk(ast: Node) -> Iterator[Node]:
    """Yield every condition node of ``ast``, parents before children, left to right.

    Filters, periods and ``then_no`` are parts of their event node, not nodes.
    """
    stack = [ast]
    while stack:
        node = stack.pop()
        yield node
        if "and" in node or "or" in node:
            stack.extend(reversed(node.get("and") or node.get("or") or []))
        elif "not" in node:
            stack.append(node["not"])


def canonical_key(ast: Node) -> str:
    """A stable text key for a canonical AST: equal sub-expressions get equal keys.

    The AST is not validated here (the planner calls this on every sub-tree of an
    already validated AST; validating each would make planning quadratic).
    """
    return json.dumps(
        ast, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def subtree_keys(ast: Node) -> dict[int, str]:
    """``canonical_key`` of every condition node of ``ast`` (as ``walk`` yields them),
    by ``id`` of the node, computed bottom-up: an ``and`` / ``or`` / ``not`` key is
    spelled from its children's keys instead of serialising each sub-tree again (which
    made planning quadratic in the depth). Equal to ``canonical_key`` node by node.
    Only valid while `ast` is alive and unchanged (ids)."""
    keys: dict[int, str] = {}
    order = list(walk(ast))
    for node in reversed(order):  # children before parents
        if len(node) == 1 and ("and" in node or "or" in node):
            kind = "and" if "and" in node else "or"
            inner = ",".join(keys[id(c)] for c in node[kind])
            keys[id(node)] = f'{{"{kind}":[{inner}]}}'
        elif len(node) == 1 and "not" in node:
            keys[id(node)] = f'{{"not":{keys[id(node["not"])]}}}'
        else:
            keys[id(node)] = canonical_key(node)
    return keys


parse_instant = parse_iso  # the UTC instant of contract-form ISO text, else None


# -- helpers ---------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {quoted(value, 60)}"


def _fail(path: str, message: str) -> InvalidQuery:
    return InvalidQuery.at(path, message)


def _check_keys(node: dict, path: str, allowed: tuple[str, ...]) -> None:
    for key in node:
        if key not in allowed:
            raise _fail(
                _join(path, shorten(str(key), 60)),
                f"unknown key {quoted(str(key), 60)} (expected one of "
                f"{', '.join(allowed)})",
            )


def _require(node: dict, key: str, path: str, what: str) -> Any:
    if key not in node:
        raise _fail(_join(path, key), f"missing (expected {what})")
    return node[key]


def _name(value: Any, path: str, what: str, reserved: frozenset[str]) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise _fail(
            path,
            f"expected {what} (an identifier [A-Za-z_][A-Za-z0-9_]*), got "
            f"{_describe(value)}",
        )
    if value.lower() in reserved:
        raise _fail(path, f"{quoted(value)} is a reserved word and cannot be {what}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any, path: str) -> int | float:
    if not _is_number(value):
        raise _fail(path, f"expected a number, got {_describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, f"expected a finite number, got {value!r}")
    if isinstance(value, int) and not -INT_MAX - 1 <= value <= INT_MAX:
        raise _fail(
            path,
            f"integer out of range (64-bit signed: -2^63..2^63-1), got "
            f"{_describe(value)}",
        )
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {_describe(value)}")
    return _text(value, path)


def _text(value: str, path: str) -> str:
    """``value`` if it is Unicode text that UTF-8 (and so protobuf and JSON) can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(
            path,
            f"the string has a lone surrogate U+{ord(value[exc.start]):04X} at "
            f"character {exc.start}, which is not Unicode text",
        ) from None
    return value


def _scalar(value: Any, path: str) -> Any:
    if isinstance(value, str):
        return _text(value, path)
    if isinstance(value, bool):
        return value
    if _is_number(value):
        return _number(value, path)
    raise _fail(
        path, f"expected a scalar (string, number or boolean), got {_describe(value)}"
    )


def _value(op: str, value: Any, path: str, scalar: Callable[[Any, str], Any]) -> Any:
    """The canonical value for ``op``; ``scalar`` checks each scalar in it."""
    if op in ("contains_any", "contains_all"):
        scalar = _string
    if op in ("prefix", "contains"):
        return _string(value, path)
    if op not in LIST_OPS:
        return scalar(value, path)
    if not isinstance(value, list | tuple):
        shape = "[lo, hi]" if op == "between" else "a non-empty list"
        raise _fail(path, f"op {op!r} expects {shape}, got {_describe(value)}")
    if op == "between" and len(value) != 2:
        raise _fail(path, f"op 'between' expects [lo, hi], got {len(value)} items")
    if not value:
        raise _fail(path, f"op {op!r} expects a non-empty list, got []")
    if len(value) > MAX_LIST_VALUES:
        raise too_many_values(path, len(value))
    return [scalar(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _op_value(
    node: dict, path: str, ops: tuple[str, ...], scalar: Callable[[Any, str], Any]
) -> Node:
    op = _require(node, "op", path, f"one of {', '.join(ops)}")
    if not isinstance(op, str) or op not in ops:
        shown = repr(op) if isinstance(op, str) else _describe(op)
        raise _fail(
            _join(path, "op"), f"unknown op {shown} (expected one of {', '.join(ops)})"
        )
    if op in NULL_OPS:
        if "value" in node:
            raise _fail(_join(path, "value"), f"op {op!r} takes no value")
        return {"op": op}
    value = _require(node, "value", path, f"a value for op {op!r}")
    return {"op": op, "value": _value(op, value, _join(path, "value"), scalar)}


def _dict(value: Any, path: str, what: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(path, f"expected {what} object, got {_describe(value)}")
    return value


# -- condition nodes -------------------------------------------------------------------


def _condition(node: Any, path: str, depth: int, state: _State) -> Node:
    if depth > MAX_DEPTH:
        raise too_deep(path or "query")
    if state.budget is not None:
        state.budget.tick()
    node = _dict(node, path, "a condition")
    kinds = [key for key in KINDS if key in node]
    if not kinds:
        raise _fail(
            path,
            f"expected a condition with one of the keys {', '.join(KINDS)}, "
            f"got keys {sorted(map(str, node))}",
        )
    if len(kinds) > 1:
        raise _fail(path, f"a condition has exactly one kind key, got {kinds}")
    kind = kinds[0]
    if kind in ("and", "or"):
        return _boolean(node, path, depth, kind, state)
    if kind == "not":
        _check_keys(node, path, ("not",))
        return {"not": _condition(node["not"], _join(path, "not"), depth + 1, state)}
    state.leaves += 1
    if state.leaves > MAX_CONDITIONS:
        raise too_many_conditions(path or "query")
    return _LEAVES[kind](node, path)


def _boolean(node: dict, path: str, depth: int, kind: str, state: _State) -> Node:
    _check_keys(node, path, (kind,))
    children, here = node[kind], _join(path, kind)
    if not isinstance(children, list | tuple):
        raise _fail(here, f"expected a list of conditions, got {_describe(children)}")
    if not children:
        raise _fail(here, "expected at least one condition, got an empty list")
    if state.leaves + len(children) > MAX_CONDITIONS:  # each child has a leaf or more
        raise too_many_conditions(here, state.leaves + len(children))
    out = [
        _condition(c, f"{here}[{i}]", depth + 1, state) for i, c in enumerate(children)
    ]
    return out[0] if len(out) == 1 else {kind: out}


def _attr(node: dict, path: str) -> Node:
    _check_keys(node, path, ("attr", "op", "value"))
    name = _name(node["attr"], _join(path, "attr"), "an attribute name", _ATTR_RESERVED)
    return {"attr": name, **_op_value(node, path, ATTR_OPS, _scalar)}


def _aggregate(node: dict, path: str) -> Node:
    _check_keys(node, path, ("aggregate", "op", "value", "period"))
    name = node["aggregate"]
    if name not in AGGREGATES:
        raise _fail(
            _join(path, "aggregate"),
            f"unknown aggregate {quoted(name, 60)} (expected one of "
            f"{', '.join(AGGREGATES)})",
        )
    out: Node = {"aggregate": name, **_op_value(node, path, AGGREGATE_OPS, _number)}
    if "period" in node:
        out["period"] = _period(node["period"], _join(path, "period"))
    return out


def _rfm(node: dict, path: str) -> Node:
    if node.get("rfm") == RFM_ENTERED:
        return _rfm_entered(node, path)
    _check_keys(node, path, ("rfm", "op", "value"))
    field = node["rfm"]
    if field not in RFM_FIELDS:
        raise _fail(
            _join(path, "rfm"),
            f"unknown RFM field {quoted(field, 60)} (expected one of "
            f"{', '.join(RFM_FIELDS)})",
        )
    scalar = _number if field in RFM_NUMERIC_FIELDS else _string
    return {"rfm": field, **_op_value(node, path, RFM_OPS, scalar)}


def _rfm_entered(node: dict, path: str) -> Node:
    _check_keys(node, path, ("rfm", "value", "from", "entry", "period"))
    value = _string(
        _require(node, "value", path, "the segment or code entered"),
        _join(path, "value"),
    )
    out: Node = {"rfm": RFM_ENTERED, "value": value}
    if "from" in node:
        out["from"] = _string(node["from"], _join(path, "from"))
    if "entry" in node:
        entry = node["entry"]
        if entry not in RFM_ENTRIES:
            raise _fail(
                _join(path, "entry"),
                f"expected one of {', '.join(RFM_ENTRIES)}, got {_describe(entry)}",
            )
        out["entry"] = entry
    if "period" in node:
        out["period"] = _period(node["period"], _join(path, "period"))
    return out


def _segment(node: dict, path: str) -> Node:
    _check_keys(node, path, ("segment",))
    name = _string(node["segment"], _join(path, "segment"))
    if not name:
        raise _fail(_join(path, "segment"), "expected a segment name, got ''")
    return {"segment": name}


def _event(node: dict, path: str) -> Node:
    _check_keys(node, path, ("event", "where", "period", "count", "sum", "then_no"))
    out: Node = {
        "event": _name(
            node["event"], _join(path, "event"), "an event type", RESERVED_WORDS
        )
    }
    if "where" in node:
        where = _where(node["where"], _join(path, "where"))
        if where:
            out["where"] = where
    if "period" in node:
        out["period"] = _period(node["period"], _join(path, "period"))
    if "count" in node:
        count = _count(node["count"], _join(path, "count"))
        if count != {"min": 1}:
            out["count"] = count
    if "sum" in node:
        out["sum"] = _sum(node["sum"], _join(path, "sum"))
    if "then_no" in node:
        out["then_no"] = _then_no(node["then_no"], _join(path, "then_no"))
    return out


_LEAVES: dict[str, Callable[[dict, str], Node]] = {
    "attr": _attr,
    "aggregate": _aggregate,
    "rfm": _rfm,
    "segment": _segment,
    "event": _event,
}
_ATTR_RESERVED = RESERVED_WORDS | frozenset(AGGREGATES)


# -- parts of event and aggregate nodes ------------------------------------------------


def _where(filters: Any, path: str) -> list[Node]:
    if not isinstance(filters, list | tuple):
        raise _fail(path, f"expected a list of filters, got {_describe(filters)}")
    if len(filters) > MAX_FILTERS:
        raise TooComplex(
            f"{path}: {len(filters)} filters, more than MAX_FILTERS = {MAX_FILTERS} "
            "in one event condition",
            limit="MAX_FILTERS",
            maximum=MAX_FILTERS,
            actual=len(filters),
            where=path,
        )
    return [_filter(f, f"{path}[{i}]") for i, f in enumerate(filters)]


def _filter(node: Any, path: str) -> Node:
    node = _dict(node, path, "a filter")
    _check_keys(node, path, ("field", "op", "value"))
    field = _require(node, "field", path, "a field name")
    name = _name(field, _join(path, "field"), "a field name", frozenset())
    name = FIELD_ALIASES.get(name, name)
    return {"field": name, **_op_value(node, path, FILTER_OPS, _scalar)}


def _duration(value: Any, path: str) -> str:
    match = DURATION_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _fail(
            path, f"expected a duration like '7d' or '12h', got {_describe(value)}"
        )
    return f"{int(match[1])}{match[2]}"


def _instant(value: Any, path: str) -> datetime:
    moment = parse_instant(value) if isinstance(value, str) else None
    if moment is None:
        raise _fail(
            path,
            "expected an ISO date or datetime like '2025-01-01' or "
            f"'2025-01-01T10:30:00Z', got {_describe(value)}",
        )
    return moment


def _period(value: Any, path: str) -> Node:
    period = _dict(value, path, "a period")
    if "last" in period or "ago" in period:
        form = "last" if "last" in period else "ago"
        if len(period) != 1:
            raise _fail(
                path,
                f"a period has exactly one of the forms {{last}}, {{ago}} or "
                f"{{from, to}}, got keys {sorted(map(str, period))}",
            )
        if form == "last":
            return {"last": _duration(period["last"], _join(path, "last"))}
        return {"ago": _ago(period["ago"], _join(path, "ago"))}
    _check_keys(period, path, ("from", "to"))
    if not period:
        raise _fail(path, "expected 'last', 'ago' or 'from' and/or 'to', got {}")
    moments = {k: _instant(v, _join(path, k)) for k, v in period.items()}
    if len(moments) == 2 and not moments["from"] < moments["to"]:
        raise _fail(
            path,
            f"'from' must be before 'to', got from={quoted(period['from'], 60)} "
            f"to={quoted(period['to'], 60)}",
        )
    return {k: period[k] for k in ("from", "to") if k in period}


def _ago(value: Any, path: str) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _fail(
            path,
            f"expected [older, newer] durations like ['60d', '30d'], got "
            f"{_describe(value)}",
        )
    older, newer = (_duration(v, f"{path}[{i}]") for i, v in enumerate(value))
    if duration_hours(older) <= duration_hours(newer):
        raise _fail(
            path,
            f"the first duration is the older bound and must be longer, got "
            f"[{older!r}, {newer!r}]",
        )
    return [older, newer]


def _count_bound(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(path, f"expected an integer >= 0, got {_describe(value)}")
    if value > INT_MAX:
        raise _fail(path, f"expected an integer <= 2^63-1, got {_describe(value)}")
    return value


def _count(value: Any, path: str) -> Node:
    count = _dict(value, path, "a count")
    _check_keys(count, path, ("min", "max"))
    out = {
        k: _count_bound(count[k], _join(path, k)) for k in ("min", "max") if k in count
    }
    if "min" in out and "max" in out and out["min"] > out["max"]:
        raise _fail(path, f"min must be <= max, got min={out['min']} max={out['max']}")
    if out.get("min") == 0 and "max" in out:
        del out["min"]  # a zero lower bound is no bound
    return out or {"min": 0}


def _sum(value: Any, path: str) -> Node:
    total = _dict(value, path, "a sum")
    _check_keys(total, path, ("field", "min", "max"))
    field = _require(total, "field", path, "a numeric field name such as 'amount'")
    out: Node = {
        "field": _name(field, _join(path, "field"), "a field name", frozenset())
    }
    for key in ("min", "max"):
        if key in total:
            out[key] = _number(total[key], _join(path, key))
    if "min" not in out and "max" not in out:
        raise _fail(path, "expected 'min' and/or 'max', got neither")
    if "min" in out and "max" in out and out["min"] > out["max"]:
        raise _fail(path, f"min must be <= max, got min={out['min']} max={out['max']}")
    return out


def _then_no(value: Any, path: str) -> Node:
    then = _dict(value, path, "a then_no")
    _check_keys(then, path, ("event", "within", "where"))
    event = _require(then, "event", path, "an event type")
    out: Node = {
        "event": _name(event, _join(path, "event"), "an event type", RESERVED_WORDS)
    }
    within = _require(then, "within", path, "a duration such as '7d'")
    out["within"] = _duration(within, _join(path, "within"))
    if "where" in then:
        where = _where(then["where"], _join(path, "where"))
        if where:
            out["where"] = where
    return out
