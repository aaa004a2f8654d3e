"""A query read once: ``prepare`` turns DSL text or an AST dict into a ``Prepared`` query.

Everything downstream (the formatter, the compiler, saved segments, the result cache)
trusts a ``Prepared`` and never validates it again. DSL texts are parsed through a cache
bounded by bytes (services send the same few texts again and again), so a repeated text
costs a dictionary lookup.
"""

from __future__ import annotations

import collections
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from segd.errors import InvalidInput
from segd.segments.ast import canonical_key, measure, validate, walk
from segd.segments.limits import PARSE_CACHE_BYTES, Budget
from segd.segments.printer import format_ast

# Bytes a parsed condition holds besides its text (the dicts of the AST, roughly).
BYTES_PER_CONDITION = 600


@dataclass(frozen=True, eq=False)
class Prepared:
    """A validated canonical query. ``ast`` is shared: never mutate it."""

    ast: dict
    text: str  # the canonical DSL text
    key: str  # canonical_key(ast): equal queries, equal keys
    depth: int
    conditions: int  # leaf conditions (references not expanded)
    references: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of_canonical(cls, ast: dict) -> Prepared:
        """Wrap an AST that is already canonical (``validate`` or ``parse`` output)."""
        depth, conditions = measure(ast)
        refs = frozenset(n["segment"] for n in walk(ast) if "segment" in n)
        return cls(ast, format_ast(ast), canonical_key(ast), depth, conditions, refs)

    @property
    def segment_ref(self) -> str | None:
        """The saved segment's name when the query is only a reference to it
        (``{"segment": name}``), else None."""
        name = self.ast.get("segment") if len(self.ast) == 1 else None
        return name if type(name) is str else None

    def nbytes(self) -> int:
        """A rough size, for the parse cache's byte bound."""
        return (
            sys.getsizeof(self.text)
            + sys.getsizeof(self.key)
            + self.conditions * BYTES_PER_CONDITION
        )


class ParseCache:
    """DSL text -> ``Prepared``, least recently used first out, bounded by bytes."""

    def __init__(self, max_bytes: int = PARSE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: collections.OrderedDict[str, tuple[Prepared, int]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, text: str, budget: Budget | None = None) -> Prepared:
        with self._lock:
            hit = self._entries.get(text)
            if hit is not None:
                self._entries.move_to_end(text)
                return hit[0]
        from segd.segments.dsl import parse

        prepared = Prepared.of_canonical(parse(text, budget))
        size = prepared.nbytes() + sys.getsizeof(text)
        if size > self.max_bytes:
            return prepared
        with self._lock:
            if text not in self._entries:
                self._entries[text] = (prepared, size)
                self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.nbytes -= dropped
        return prepared

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0


PARSE_CACHE = ParseCache()


class SegmentRefs:
    """Saved-segment name -> the ``Prepared`` of ``{"segment": name}``, the query of
    every Count / Members of a saved segment over gRPC: validating, formatting and
    keying it again on each call cost ~0.25 ms (more than answering from the result
    cache). The reference is the same whatever the segment holds (its definition is
    looked up when the query is compiled), so it stays valid when the segment changes.
    Least recently used first out, ``max_entries`` at most."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, Prepared] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, name: str, budget: Budget | None = None) -> Prepared:
        with self._lock:
            hit = self._entries.get(name)
            if hit is not None:
                self._entries.move_to_end(name)
                return hit
        prepared = Prepared.of_canonical(validate({"segment": name}, budget))
        with self._lock:
            self._entries[name] = prepared
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return prepared


SEGMENT_REFS = SegmentRefs()


def prepare(query: Any, budget: Budget | None = None) -> Prepared:
    """DSL text (parsed through ``PARSE_CACHE``), an AST dict (validated) or a
    ``Prepared`` (returned as is) -> ``Prepared``."""
    if isinstance(query, Prepared):
        return query
    if isinstance(query, str):
        return PARSE_CACHE.get(query, budget)
    if isinstance(query, dict):
        name = query.get("segment") if len(query) == 1 else None
        if type(name) is str:
            return SEGMENT_REFS.get(name, budget)
        return Prepared.of_canonical(validate(query, budget))
    raise InvalidInput.at(
        "query", f"expected DSL text or an AST dict, got {type(query).__name__}"
    )
