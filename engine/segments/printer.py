"""Printing a canonical segment AST as DSL text (the inverse of ``dsl.parse``).

Apart from the parser so that each module stays small. Output is minimal: parentheses
only where precedence (not > and > or) or nesting of the same operator needs them;
strings are always quoted (a string that looks like a date stays a string), floats use
``repr`` so they read back bit for bit, period bounds print as bare DATE tokens.
"""

from __future__ import annotations

from typing import Any

OP_SPELLING = {
    "between": "between",
    "in": "in",
    "not_in": "not in",
    "is_null": "is null",
    "is_not_null": "is not null",
    "prefix": "prefix",
    "contains": "contains",
    "contains_any": "contains_any",
    "contains_all": "contains_all",
}


def format_ast(node: dict) -> str:
    """DSL text of ``node``, which must already be canonical (``validate`` output)."""
    return _format_node(node)


def _format_node(node: dict) -> str:
    for kind in ("or", "and"):
        if kind in node:
            inner = ("or",) if kind == "or" else ("or", "and")
            parts = [_format_child(child, inner) for child in node[kind]]
            return f" {kind} ".join(parts)
    if "not" in node:
        return "not " + _format_child(node["not"], ("or", "and"))
    if "segment" in node:
        return f"in segment {_quote(node['segment'])}"
    if "event" in node:
        return _format_event(node)
    if "attr" in node:
        return f"{node['attr']} {_format_compare(node)}"
    if "rfm" in node:
        if node["rfm"] == "entered":
            return _format_entered(node)
        return f"rfm.{node['rfm']} {_format_compare(node)}"
    text = f"{node['aggregate']} {_format_compare(node)}"
    return text + (f" {_format_period(node['period'])}" if "period" in node else "")


def _format_entered(node: dict) -> str:
    parts = [f"rfm.entered {_quote(node['value'])}"]
    if "from" in node:
        parts.append(f"from {_quote(node['from'])}")
    if node.get("entry") == "first":
        parts.append("first time")
    elif node.get("entry") == "again":
        parts.append("again")
    if "period" in node:
        parts.append(_format_period(node["period"]))
    return " ".join(parts)


def _format_child(node: dict, wrap: tuple[str, ...]) -> str:
    text = _format_node(node)
    return f"({text})" if any(kind in node for kind in wrap) else text


def _format_compare(node: dict) -> str:
    op = node["op"]
    value: Any = node.get("value")  # validated: a list for the list operators
    if op in ("is_null", "is_not_null"):
        return OP_SPELLING[op]
    if op == "between":
        return f"between {_literal(value[0])} and {_literal(value[1])}"
    if op in ("in", "not_in", "contains_any", "contains_all"):
        items = ", ".join(_literal(v) for v in value)
        return f"{OP_SPELLING[op]} ({items})"
    return f"{op} {_literal(value)}"


def _format_event(node: dict) -> str:
    where = node.get("where", [])
    kind = node["event"].removeprefix("segment_")
    if (
        node["event"] in ("segment_entered", "segment_exited")
        and len(where) == 1
        and where[0]["field"] == "segment"
        and where[0]["op"] == "="
        and isinstance(where[0]["value"], str)
    ):  # the live segments' events: `entered segment "vip" in last 7 days`
        parts = [f"{kind} segment {_quote(where[0]['value'])}"]
    else:
        parts = [f"{node['event']}({_format_filters(where)})"]
    count = node.get("count")
    if count is not None:
        parts.append(f"count {_format_count(count)}")
    if "sum" in node:
        parts.append(_format_sum(node["sum"]))
    if "period" in node:
        parts.append(_format_period(node["period"]))
    then = node.get("then_no")
    if then is not None:
        where = f"({_format_filters(then['where'])})" if "where" in then else ""
        within = _format_duration(then["within"])
        parts.append(f"then no {then['event']}{where} within {within}")
    return " ".join(parts)


def _format_filters(filters: list[dict]) -> str:
    return ", ".join(f"{f['field']} {_format_compare(f)}" for f in filters)


def _format_count(count: dict) -> str:
    low, high = count.get("min"), count.get("max")
    if high is None:
        return f">= {low}"
    if low is None:
        return "= 0" if high == 0 else f"<= {high}"
    return f"= {low}" if low == high else f"{low}..{high}"


def _format_sum(total: dict) -> str:
    low, high = total.get("min"), total.get("max")
    head = f"sum({total['field']})"
    if high is None:
        return f"{head} >= {_literal(low)}"
    if low is None:
        return f"{head} <= {_literal(high)}"
    if low == high and type(low) is type(high):
        return f"{head} = {_literal(low)}"
    return f"{head} between {_literal(low)} and {_literal(high)}"


def _format_period(period: dict) -> str:
    if "last" in period:
        return f"in last {_format_duration(period['last'])}"
    if "ago" in period:
        older, newer = period["ago"]
        if older[-1] == newer[-1]:
            return f"from {older[:-1]} to {_format_duration(newer)} ago"
        return f"from {_format_duration(older)} to {_format_duration(newer)} ago"
    if "from" in period and "to" in period:
        return f"between {period['from']} and {period['to']}"
    if "from" in period:
        return f"from {period['from']}"
    return f"before {period['to']}"


def _format_duration(duration: str) -> str:
    amount, unit = duration[:-1], duration[-1]
    word = "day" if unit == "d" else "hour"
    return f"{amount} {word}" if amount == "1" else f"{amount} {word}s"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    return repr(value)  # repr round-trips floats exactly (1e+16, 5e-324, -0.0)


def _quote(text: str) -> str:
    """A double-quoted DSL string literal; non-printable characters become escapes."""
    out = []
    for char in text:
        if char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


_QUOTE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


_QUOTE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
