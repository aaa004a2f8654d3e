"""An independent oracle for the segment language: AST -> one DuckDB SQL query.

The differential tests ask segd and this oracle the same question over the same data
and compare the customer_id sets. It shares no code with the engine (only
``segd.errors``), so a misreading of docs/segment-language.md would have to be made
twice to go unnoticed. Its semantics are pinned by literal id sets in test_oracle.py.

Translation: the query ranges over the *universe* (every customer_id of the contacts
table plus those seen only in events) left-joined with the contacts; each AST node
becomes a SQL boolean that is never NULL, so ``not`` is a plain set complement. Times:
event ``ts`` is floored to whole seconds (``ts_s``), ``now`` and period bounds are exact
microseconds, contact timestamps compare at millisecond resolution (segd stores UTC ms).

Readings pinned by issue 8 (docs/segment-language.md): ``item_id`` in an event filter is
``item``; a *visit* is an event of ``VISIT_EVENTS`` only (on-site activity, not email,
message or ad events); the count of an ``order`` condition counts distinct ``order_id``s
(a line without one is an order of its own), as ``orders_count`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa

from segd.errors import InvalidQuery, SegmentNotFound

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_DAY = 86_400_000_000
_KIND_KEYS = {
    "and": {"and"},
    "or": {"or"},
    "not": {"not"},
    "attr": {"attr", "op", "value"},
    "event": {"event", "where", "period", "count", "sum", "then_no"},
    "aggregate": {"aggregate", "op", "value", "period"},
    "rfm": {"rfm", "op", "value"},
    "segment": {"segment"},
}
_CMP = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_CATALOG_FIELDS = {"category", "brand", "price", "in_stock"}
# Written out here, not imported: the oracle shares no code with the engine.
VISIT_EVENTS = (
    "view", "page_view", "category_view", "article_view", "visit", "add_to_cart",
    "remove_from_cart", "add_to_favorites", "order", "search", "goal",
)  # fmt: skip
_AGG_KINDS = {
    "orders_count": "int",
    "revenue": "float",
    "avg_order_value": "float",
    "days_since_last_order": "int",
    "days_since_last_visit": "int",
    "days_since_last_email_open": "int",
}


def _kind(t: pa.DataType) -> str:
    """The segd attribute type of an Arrow type (see docs/data-model.md)."""
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "tags"
    raise TypeError(f"unsupported column type {t}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: object) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidQuery(f"value must be finite, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise InvalidQuery(f"expected a scalar value, got {value!r}")


def _to_us(value: datetime | int | float) -> int:
    """Exact microseconds since the epoch; naive datetimes are refused (ambiguous)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"now must be timezone-aware, got {value.isoformat()}")
        return (value - _EPOCH) // timedelta(microseconds=1)
    return int(Decimal(str(value)) * 1_000_000)


def _iso_us(text: object) -> int:
    """ISO-8601 date or date-time (``Z``/offset; naive = UTC) -> epoch microseconds."""
    if not isinstance(text, str):
        raise InvalidQuery(f"expected an ISO-8601 date string, got {text!r}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(f"bad ISO-8601 date {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _to_us(parsed)


def _duration_us(text: object) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([dh])", str(text))
    if m is None:
        raise InvalidQuery(f"bad duration {text!r}: expected e.g. '7d' or '12h'")
    unit = _US_PER_DAY if m.group(2) == "d" else 3_600_000_000
    return int(Decimal(m.group(1)) * unit)


@dataclass(frozen=True)
class _Ctx:
    """Per-query state: ``now`` and the saved segments, with the reference stack."""

    now_us: int
    segments: dict[str, dict]
    stack: tuple[str, ...] = ()


class SqlOracle:
    """Segment membership by DuckDB SQL over in-memory copies of the three tables."""

    def __init__(
        self,
        contacts: pa.Table,
        items: pa.Table,
        events: pa.Table,
        visit_events: tuple[str, ...] = VISIT_EVENTS,
    ) -> None:
        self._visit_events = tuple(visit_events)
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")  # date/timestamp casts read as UTC
        for name, table in (("contacts", contacts), ("items", items)):
            self._con.register(f"{name}_src", table)
            self._con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_src")
        self._con.register("events_src", events)
        ts_expr = self._ts_seconds(events.schema.field("ts").type)
        self._con.execute(
            f"CREATE TABLE events AS SELECT * EXCLUDE (ts), {ts_expr} AS ts_s "
            "FROM events_src"
        )
        self._contact_kinds = {f.name: _kind(f.type) for f in contacts.schema}
        self._item_kinds = {f.name: _kind(f.type) for f in items.schema}
        self._event_kinds = {
            f.name: _kind(f.type) for f in events.schema if f.name not in ("ts", "type")
        }
        self._event_kinds.pop("customer_id", None)

    @staticmethod
    def _ts_seconds(t: pa.DataType) -> str:
        """SQL for the event time floored to whole UTC seconds, whatever its type."""
        if pa.types.is_integer(t):
            return "CAST(ts AS BIGINT)"
        if pa.types.is_date(t):
            return "epoch_ms(CAST(ts AS TIMESTAMP)) // 1000"
        if pa.types.is_timestamp(t):
            return "CAST(floor(epoch_us(ts) / 1e6) AS BIGINT)"
        return "CAST(floor(epoch_us(CAST(ts AS TIMESTAMPTZ)) / 1e6) AS BIGINT)"

    # ------------------------------------------------------------------ public API

    def members(
        self, ast: dict, now: datetime | int | float, segments: dict | None = None
    ) -> set[str]:
        """The customer_ids matching ``ast`` at ``now`` (aware datetime or epoch s)."""
        rows = self._con.execute(self.to_sql(ast, now, segments)).fetchall()
        return {row[0] for row in rows}

    def to_sql(
        self, ast: dict, now: datetime | int | float, segments: dict | None = None
    ) -> str:
        """The one SQL query ``members`` runs (for debugging a disagreement)."""
        where = self._node(ast, _Ctx(_to_us(now), dict(segments or {})))
        return (
            "WITH universe AS (\n"
            "  SELECT customer_id FROM contacts WHERE customer_id IS NOT NULL\n"
            "  UNION SELECT customer_id FROM events WHERE customer_id IS NOT NULL)\n"
            "SELECT DISTINCT u.customer_id FROM universe u\n"
            "LEFT JOIN contacts c ON c.customer_id = u.customer_id\n"
            f"WHERE {where}"
        )

    # ------------------------------------------------------------------ nodes

    def _node(self, node: object, ctx: _Ctx) -> str:
        """A never-NULL SQL boolean over ``u`` (universe) and ``c`` (contacts) rows."""
        if not isinstance(node, dict):
            raise InvalidQuery(f"a condition must be an object, got {node!r}")
        kinds = [k for k in _KIND_KEYS if k in node]
        if len(kinds) != 1:
            raise InvalidQuery(
                f"a condition needs exactly one kind key, got {list(node)}"
            )
        kind = kinds[0]
        unknown = set(node) - _KIND_KEYS[kind]
        if unknown:
            raise InvalidQuery(f"unknown keys {sorted(unknown)} in {kind!r} condition")
        if kind in ("and", "or"):
            children = node[kind]
            if not isinstance(children, list) or not children:
                raise InvalidQuery(f"{kind!r} needs a non-empty list of conditions")
            parts = [self._node(child, ctx) for child in children]
            return "(" + f" {kind.upper()} ".join(parts) + ")"
        if kind == "not":
            return f"(NOT {self._node(node['not'], ctx)})"
        if kind == "attr":
            expr, col_kind = self._attribute(node["attr"], ctx)
            pred = _compare(expr, col_kind, node["op"], node.get("value"), node)
            return f"coalesce({pred}, FALSE)"
        if kind == "event":
            return self._event(node, ctx)
        if kind == "aggregate":
            return self._aggregate(node, ctx)
        if kind == "rfm":
            raise NotImplementedError("rfm conditions: values come from a later issue")
        return self._segment(node["segment"], ctx)

    def _segment(self, name: str, ctx: _Ctx) -> str:
        """Inline the saved segment's AST (dynamic semantics, evaluated at ``now``)."""
        if name in ctx.stack:
            raise InvalidQuery(f"segment reference cycle: {' -> '.join(ctx.stack)}")
        if name not in ctx.segments:
            raise SegmentNotFound(name)
        inner = _Ctx(ctx.now_us, ctx.segments, (*ctx.stack, name))
        return self._node(ctx.segments[name], inner)

    def _attribute(self, name: str, ctx: _Ctx) -> tuple[str, str]:
        """SQL expression and segd type of a contact attribute (``age`` is derived)."""
        if name == "age" and "age" not in self._contact_kinds:
            if "birth_date" not in self._contact_kinds:
                raise InvalidQuery(
                    "unknown attribute 'age' (no age or birth_date column)"
                )
            return _full_years("CAST(c.birth_date AS DATE)", ctx.now_us), "int"
        if name not in self._contact_kinds:
            raise InvalidQuery(f"unknown attribute {name!r}")
        kind = self._contact_kinds[name]
        return _column(f"c.{_ident(name)}", kind), kind

    # ------------------------------------------------------------------ events

    def _matched(
        self,
        event: str,
        where: list | None,
        period: dict | None,
        ctx: _Ctx,
        v: str = "NULL",
    ) -> str:
        """SELECT customer_id, ts_s, v (the sum field), oid (the order id) of the
        matching event rows."""
        conds = [f"e.type = {_lit(event)}"]
        conds += [self._filter(f) for f in where or []]
        conds += _period(period, ctx.now_us)
        oid = "e.order_id" if "order_id" in self._event_kinds else "NULL"
        return (
            f"SELECT e.customer_id, e.ts_s, {v} AS v, {oid} AS oid FROM events e "
            "LEFT JOIN items i ON i.item_id = e.item_id WHERE " + " AND ".join(conds)
        )

    def _filter(self, f: dict) -> str:
        """One ``where`` filter; NULL (the event lacks the field) never matches."""
        if not isinstance(f, dict) or set(f) - {"field", "op", "value"}:
            raise InvalidQuery(f"bad filter {f!r}: expected {{field, op, value}}")
        field, op, value = f["field"], f["op"], f.get("value")
        if field == "category" and "category" in self._item_kinds:
            return _category(op, value, f)
        expr, kind = self._field(field)
        return f"coalesce({_compare(_column(expr, kind), kind, op, value, f)}, FALSE)"

    def _field(self, field: str) -> tuple[str, str]:
        """Where an event field lives: the event row ``e`` or its catalog item ``i``."""
        if field in ("item", "item_id"):
            return "e.item_id", "string"
        if field in self._event_kinds and field not in _CATALOG_FIELDS:
            return f"e.{_ident(field)}", self._event_kinds[field]
        if field in self._item_kinds and field != "item_id":
            return f"i.{_ident(field)}", self._item_kinds[field]
        raise InvalidQuery(f"unknown event field {field!r}")

    def _event(self, node: dict, ctx: _Ctx) -> str:
        """Count (and sum) of the surviving matching events per contact, in range.

        Contacts with no matching event have count 0 and sum 0: when that state is in
        range the condition is written as "not among those with events out of range".
        """
        total = node.get("sum")
        v = "NULL"
        if total is not None:
            v, kind = self._field(total["field"])
            if kind not in ("int", "float"):
                raise InvalidQuery(f"sum needs a numeric field, got {total['field']!r}")
        where, period = node.get("where"), node.get("period")
        matched = self._matched(node["event"], where, period, ctx, v)
        then_no = node.get("then_no")
        if then_no is not None:
            b = self._matched(then_no["event"], then_no.get("where"), None, ctx)
            within_us = _duration_us(then_no["within"])
            matched = (
                f"SELECT a.* FROM ({matched}) a WHERE NOT EXISTS "
                f"(SELECT 1 FROM ({b}) b "
                "WHERE b.customer_id = a.customer_id AND b.ts_s >= a.ts_s "
                f"AND b.ts_s * 1000000 < a.ts_s * 1000000 + {within_us})"
            )
        count = node.get("count")
        lo = (count or {}).get("min", 0 if count is not None else 1)
        hi = (count or {}).get("max")
        n = "count(*)"
        if node["event"] == "order":  # orders, not lines: distinct order ids
            n = "(count(DISTINCT m.oid) + count(*) FILTER (m.oid IS NULL))"
        having = [f"{n} >= {int(lo)}"]
        zero_ok = lo <= 0 and (hi is None or hi >= 0)
        if hi is not None:
            having.append(f"{n} <= {int(hi)}")
        if total is not None:
            if "min" in total:
                having.append(f"coalesce(sum(m.v), 0) >= {_lit(total['min'])}")
                zero_ok = zero_ok and total["min"] <= 0
            if "max" in total:
                having.append(f"coalesce(sum(m.v), 0) <= {_lit(total['max'])}")
                zero_ok = zero_ok and total["max"] >= 0
        grouped = f"SELECT m.customer_id FROM ({matched}) m GROUP BY m.customer_id"
        cond = " AND ".join(having)
        if zero_ok:  # contacts without matching events match: exclude the failing ones
            return f"(u.customer_id NOT IN ({grouped} HAVING NOT ({cond})))"
        return f"(u.customer_id IN ({grouped} HAVING {cond}))"

    # ------------------------------------------------------------------ aggregates

    def _aggregate(self, node: dict, ctx: _Ctx) -> str:
        name = node["aggregate"]
        if name not in _AGG_KINDS:
            raise InvalidQuery(f"unknown aggregate {name!r}")
        if node["op"] in ("prefix", "contains", "contains_any", "contains_all"):
            raise InvalidQuery(f"operator {node['op']!r} does not apply to aggregates")
        orders = (
            "coalesce(count(DISTINCT order_id) + count(*) FILTER (order_id IS NULL), 0)"
        )
        revenue = "coalesce(sum(amount), 0)"
        age_us = f"({ctx.now_us} - max(ts_s) * 1000000)"
        days = f"CAST(floor({age_us} / {_US_PER_DAY}.0) AS BIGINT)"
        agg, zero, event = {
            "orders_count": (orders, "0", "order"),
            "revenue": (revenue, "0.0", "order"),
            "avg_order_value": (f"{revenue} / {orders}", "NULL", "order"),
            "days_since_last_order": (days, "NULL", "order"),
            "days_since_last_visit": (days, "NULL", self._visit_events),
            "days_since_last_email_open": (days, "NULL", "email_open"),
        }[name]
        types = (event,) if isinstance(event, str) else event
        conds = [f"e.type IN ({', '.join(_lit(t) for t in types)})"] + _period(
            node.get("period"), ctx.now_us
        )
        where = " AND ".join(conds) or "TRUE"
        per_contact = (
            f"SELECT customer_id, {agg} AS v FROM events e WHERE {where} GROUP BY 1"
        )
        value = f"coalesce(g.v, {zero})"
        pred = _compare(value, _AGG_KINDS[name], node["op"], node.get("value"), node)
        return (
            f"(u.customer_id IN (SELECT uu.customer_id FROM universe uu LEFT JOIN "
            f"({per_contact}) g ON g.customer_id = uu.customer_id "
            f"WHERE coalesce({pred}, FALSE)))"
        )


# ---------------------------------------------------------------------- SQL pieces


def _column(expr: str, kind: str) -> str:
    """Normalise a column for comparison: strings as VARCHAR, times as epoch ms."""
    if kind == "string":
        return f"CAST({expr} AS VARCHAR)"
    if kind == "timestamp":
        return f"epoch_ms(CAST({expr} AS TIMESTAMPTZ))"
    return expr


def _full_years(birth: str, now_us: int) -> str:
    """Age in full years on ``now``'s UTC date (a 29 Feb birthday counts from 1 Mar).

    Not ``date_diff('year', ...)``, which counts year boundaries crossed.
    """
    today: date = (_EPOCH + timedelta(microseconds=now_us)).date()
    later = (
        f"CASE WHEN month({birth}) > {today.month} OR (month({birth}) = {today.month} "
        f"AND day({birth}) > {today.day}) THEN 1 ELSE 0 END"
    )
    return f"({today.year} - year({birth}) - {later})"


def _period(period: dict | None, now_us: int) -> list[str]:
    """Half-open ``[from, to)`` bounds on ``e.ts_s``, compared in exact microseconds."""
    if not period:
        return []
    if set(period) - {"from", "to", "last", "ago"}:
        raise InvalidQuery(f"bad period {period!r}")
    lo = hi = None
    if "last" in period:
        lo, hi = now_us - _duration_us(period["last"]), now_us
    elif "ago" in period:
        older, newer = period["ago"]
        lo, hi = now_us - _duration_us(older), now_us - _duration_us(newer)
    else:
        lo = _iso_us(period["from"]) if "from" in period else None
        hi = _iso_us(period["to"]) if "to" in period else None
    conds = [] if lo is None else [f"e.ts_s * 1000000 >= {lo}"]
    return conds + ([] if hi is None else [f"e.ts_s * 1000000 < {hi}"])


def _category(op: str, value: object, where: object) -> str:
    """Category filters: ``=``/``in``/``!=``/``not_in`` cover the whole sub-tree."""
    cat = "CAST(i.category AS VARCHAR)"
    if op not in ("=", "in", "!=", "not_in"):
        return f"coalesce({_compare(cat, 'string', op, value, where)}, FALSE)"
    values = value if op in ("in", "not_in") else [value]
    if not isinstance(values, list) or not values:
        raise InvalidQuery(f"{op!r} needs a non-empty list of values in {where!r}")
    subtree = " OR ".join(
        f"{cat} = {_lit(v)} OR starts_with({cat}, {_lit(v + '/')})"
        for v in map(_string, values)
    )
    if op in ("=", "in"):
        return f"coalesce({subtree}, FALSE)"
    return f"({cat} IS NOT NULL AND NOT coalesce({subtree}, FALSE))"


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidQuery(f"expected a string value, got {value!r}")
    return value


def _scalar(value: object, kind: str, where: object) -> str:
    """A literal checked against the column type (timestamp: ISO string -> epoch ms)."""
    if kind == "timestamp":
        return str(_iso_us(value) // 1000)
    ok = {
        "string": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int | float) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(kind, False)
    if not ok:
        raise InvalidQuery(f"value {value!r} does not fit a {kind} field in {where!r}")
    return _lit(value)


def _compare(expr: str, kind: str, op: str, value: object, where: object) -> str:
    """The attribute operators; the SQL may yield NULL (callers coalesce to FALSE)."""
    if op in ("is_null", "is_not_null"):
        return f"({expr} IS {'NOT ' if op == 'is_not_null' else ''}NULL)"
    if kind == "tags":
        if op not in ("contains_any", "contains_all"):
            raise InvalidQuery(f"operator {op!r} does not apply to tags in {where!r}")
        if not isinstance(value, list) or not value:
            raise InvalidQuery(f"{op!r} needs a non-empty list of strings in {where!r}")
        fn = "list_has_any" if op == "contains_any" else "list_has_all"
        return (
            f"{fn}({expr}, [{', '.join(_lit(_string(v)) for v in value)}]::VARCHAR[])"
        )
    if op in _CMP:
        return f"({expr} {_CMP[op]} {_scalar(value, kind, where)})"
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise InvalidQuery(f"'between' needs [lo, hi] in {where!r}")
        lo, hi = (_scalar(v, kind, where) for v in value)
        return f"({expr} BETWEEN {lo} AND {hi})"
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise InvalidQuery(f"{op!r} needs a non-empty list in {where!r}")
        items = ", ".join(_scalar(v, kind, where) for v in value)
        return f"({expr} {'NOT ' if op == 'not_in' else ''}IN ({items}))"
    if op in ("prefix", "contains") and kind == "string":
        fn = "starts_with" if op == "prefix" else "contains"
        return f"{fn}({expr}, {_lit(_string(value))})"
    raise InvalidQuery(f"operator {op!r} does not apply to a {kind} field in {where!r}")
