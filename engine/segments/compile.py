"""AST -> plan: resolve names against the store and the saved segments, build nodes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pyroaring import BitMap

from segd.columns import CategoryColumn, NumericColumn, TagsColumn
from segd.errors import InvalidQuery, SegmentNotFound
from segd.results import QueryWarning
from segd.segments.ast import canonical_key, validate, walk
from segd.segments.conditions import (
    AgeAttr,
    AggregateNode,
    CategoryAttr,
    NumericAttr,
    TagsAttr,
)
from segd.segments.event_node import EventNode
from segd.segments.hints import name_hint, unknown_values
from segd.segments.plan import AndNode, ConstNode, Node, NotNode, OrNode, RefNode
from segd.store import Store

# name -> (ast, static members or None); provided by the segment registry.
SegmentLookup = Callable[[str], tuple[dict, BitMap | None]]


def _join(path: str, key: str) -> str:
    """Warnings name AST paths like ``and[0].where[1].value`` (no leading ``$``)."""
    path = path.removeprefix("$").lstrip(".")
    return f"{path}.{key}" if path else key


class Compiler:
    """Builds the plan of one query (one `now`, one store state)."""

    def __init__(
        self,
        store: Store,
        now_s: float,
        segments: SegmentLookup | None,
        rfm: Callable | None = None,
    ) -> None:
        self.store = store
        self.now_s = now_s
        self.segments = segments
        self.rfm = rfm
        self._repeats: Counter[str] = Counter()
        self._resolving: list[str] = []
        # Valid but suspicious parts of the query (unknown catalog values), in AST order.
        self.warnings: list[QueryWarning] = []

    def compile(self, ast: dict) -> Node:
        canonical = validate(ast)
        self._repeats = Counter(canonical_key(n) for n in walk(canonical))
        return self._node(canonical, "$")

    def _node(self, ast: dict, path: str) -> Node:
        key = canonical_key(ast)
        node = self._build(ast, key, path)
        node.shared = self._repeats[key] > 1 and not isinstance(node, ConstNode)
        return node

    def _build(self, ast: dict, key: str, path: str) -> Node:
        if "and" in ast:
            return AndNode(
                ast,
                key,
                [self._node(c, f"{path}.and[{i}]") for i, c in enumerate(ast["and"])],
            )
        if "or" in ast:
            return OrNode(
                ast,
                key,
                [self._node(c, f"{path}.or[{i}]") for i, c in enumerate(ast["or"])],
            )
        if "not" in ast:
            return NotNode(ast, key, self._node(ast["not"], f"{path}.not"))
        if "attr" in ast:
            return self._attr(ast, key, path)
        if "event" in ast:
            self._check_event_type(ast["event"], f"{path}.event")
            self.warnings += unknown_values(
                self.store, ast.get("where", []), _join(path, "where")
            )
            if "then_no" in ast:
                then = ast["then_no"]
                self._check_event_type(then["event"], f"{path}.then_no.event")
                self.warnings += unknown_values(
                    self.store, then.get("where", []), _join(path, "then_no.where")
                )
            return EventNode(ast, key, self.store, self.now_s, path)
        if "aggregate" in ast:
            return AggregateNode(ast, key, self.now_s, path)
        if "segment" in ast:
            return self._segment(ast, key, path)
        if "rfm" in ast:
            if self.rfm is None:
                raise InvalidQuery.at(
                    path,
                    "RFM conditions need RFM scores, which this "
                    "engine has not computed",
                )
            return self.rfm(ast, key, path)
        raise InvalidQuery.at(path, "unknown condition")

    def _attr(self, ast: dict, key: str, path: str) -> Node:
        name = ast["attr"]
        contacts = self.store.contacts
        col = contacts.column(name)
        if col is None and name == "age":
            birth = contacts.column("birth_date")
            if isinstance(birth, NumericColumn) and birth.kind == "timestamp":
                return AgeAttr(ast, key, birth, self.now_s, path)
        if col is None:
            raise InvalidQuery.at(
                f"{path}.attr", f"unknown attribute {name!r}" + contacts.suggest(name)
            )
        if isinstance(col, CategoryColumn):
            return CategoryAttr(ast, key, col, path)
        if isinstance(col, TagsColumn):
            return TagsAttr(ast, key, col, path)
        return NumericAttr(ast, key, col, path)

    def _check_event_type(self, etype: str, where: str) -> None:
        known = self.store.known_event_types()
        if etype not in known:
            hint = name_hint(etype, sorted(known))
            raise InvalidQuery.at(where, f"unknown event type {etype!r}{hint}")

    def _segment(self, ast: dict, key: str, path: str) -> Node:
        name = ast["segment"]
        if self.segments is None:
            raise SegmentNotFound(name)
        if name in self._resolving:
            chain = " -> ".join([*self._resolving, name])
            raise InvalidQuery.at(path, f"segment reference cycle: {chain}")
        seg_ast, members = self.segments(name)
        if members is not None:
            return ConstNode(ast, key, members, name)
        self._resolving.append(name)
        try:
            inner_ast = validate(seg_ast)
            for n in walk(inner_ast):
                self._repeats[canonical_key(n)] += 1
            inner = self._node(inner_ast, f"{path}<{name}>")
        finally:
            self._resolving.pop()
        return RefNode(ast, key, inner, name)
