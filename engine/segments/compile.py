"""AST -> plan: resolve names against the store and the saved segments, build nodes.

The compiler trusts its input: a canonical AST (``Prepared.ast``, or a saved segment's
stored AST), validated once when it was read. It checks what only it can see: names
against the store, and the limits of ``segd.segments.limits`` once references to dynamic
saved segments are expanded (an expanded reference takes the place of its leaf, so
``in segment "s"`` is exactly as deep as ``s``). Depth is checked before descending.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pyroaring import BitMap

from segd.columns import CategoryColumn, NumericColumn, TagsColumn
from segd.errors import InvalidQuery, SegmentNotFound, TooComplex
from segd.results import QueryWarning
from segd.segments.ast import canonical_key, subtree_keys, walk
from segd.segments.conditions import (
    AgeAttr,
    AggregateNode,
    CategoryAttr,
    NumericAttr,
    TagsAttr,
)
from segd.segments.event_node import EventNode
from segd.segments.hints import name_hint, unknown_values
from segd.segments.limits import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    too_deep,
    too_many_conditions,
)
from segd.segments.plan import AndNode, ConstNode, Node, NotNode, OrNode, RefNode
from segd.store import Store

# name -> (ast, static members or None); provided by the segment registry.
SegmentLookup = Callable[[str], tuple[dict, BitMap | None]]
# A dynamic segment's members kept exact at this compile's `now` (live segments at the
# engine clock), or None when the segment's plan must be inlined.
LiveLookup = Callable[[str], BitMap | None]


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
        live: LiveLookup | None = None,
    ) -> None:
        self.store = store
        self.now_s = now_s
        self.segments = segments
        self.rfm = rfm
        self.live = live
        self._repeats: Counter[str] = Counter()
        self._resolving: list[str] = []
        self._conditions = 0
        self._keys: dict[int, str] = {}  # canonical key by id of AST node (compile)
        # Valid but suspicious parts of the query (unknown catalog values), in AST order.
        self.warnings: list[QueryWarning] = []

    def compile(self, ast: dict) -> Node:
        """The plan of canonical ``ast`` (not validated again: see module docstring)."""
        self._keys = subtree_keys(ast)
        self._repeats = Counter(self._keys[id(n)] for n in walk(ast))
        self._conditions = 0
        return self._node(ast, "$", 1)

    def _node(self, ast: dict, path: str, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise too_deep(path)
        key = self._keys.get(id(ast))
        if key is None:
            key = canonical_key(ast)
        node = self._build(ast, key, path, depth)
        node.shared = self._repeats[key] > 1 and not isinstance(node, ConstNode)
        return node

    def _build(self, ast: dict, key: str, path: str, depth: int) -> Node:
        if "and" in ast or "or" in ast:
            kind = "and" if "and" in ast else "or"
            parts = [
                self._node(c, f"{path}.{kind}[{i}]", depth + 1)
                for i, c in enumerate(ast[kind])
            ]
            return (
                AndNode(ast, key, parts) if kind == "and" else OrNode(ast, key, parts)
            )
        if "not" in ast:
            return NotNode(ast, key, self._node(ast["not"], f"{path}.not", depth + 1))
        if "segment" in ast:
            return self._segment(ast, key, path, depth)
        self._conditions += 1
        if self._conditions > MAX_CONDITIONS:
            raise too_many_conditions(path)
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
        if etype in self.store.logs:  # the common case, without building the set
            return
        known = self.store.known_event_types()
        if etype not in known:
            hint = name_hint(etype, sorted(known))
            raise InvalidQuery.at(where, f"unknown event type {etype!r}{hint}")

    def _segment(self, ast: dict, key: str, path: str, depth: int) -> Node:
        name = ast["segment"]
        if self.segments is None:
            raise SegmentNotFound(name)
        if name in self._resolving:
            chain = " -> ".join([*self._resolving, name])
            raise InvalidQuery.at(path, f"segment reference cycle: {chain}")
        seg_ast, members = self.segments(name)
        if members is not None:
            self._conditions += 1
            if self._conditions > MAX_CONDITIONS:
                raise too_many_conditions(path)
            return ConstNode(ast, key, members, name)
        if len(self._resolving) >= MAX_DEPTH:
            raise TooComplex(
                f"{path}: segment references nested deeper than MAX_DEPTH = "
                f"{MAX_DEPTH} ({' -> '.join([*self._resolving[:3], '...', name])})",
                limit="MAX_DEPTH",
                maximum=MAX_DEPTH,
                where=path,
            )
        self._resolving.append(name)
        try:
            # A saved segment's AST was validated when it was saved: trusted here.
            inner_keys = subtree_keys(seg_ast)
            self._keys.update(inner_keys)
            self._repeats.update(inner_keys[id(n)] for n in walk(seg_ast))
            inner = self._node(seg_ast, f"{path}<{name}>", depth)
        finally:
            self._resolving.pop()
        # The inner plan is built either way: the same limits, cycle checks and warnings
        # hold whether or not the answer then comes from the live members.
        held = self.live(name) if self.live is not None else None
        if held is not None:
            return ConstNode(ast, key, held, name, static=False)
        return RefNode(ast, key, inner, name)
