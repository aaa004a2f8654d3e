"""The documented limits of one query (docs/segment-language.md, "Limits").

Every limit is checked before the expensive work it protects, and a query over one is
refused with ``TooComplex`` (gRPC ``RESOURCE_EXHAUSTED``) naming the limit:

- ``MAX_DSL_CHARS``: characters of DSL text, checked before tokenizing;
- ``MAX_DEPTH``: conditions on the longest path from the root to a leaf (a lone
  condition has depth 1, ``not a`` 2), the same limit for DSL text, AST dicts, typed
  ``Condition`` messages and saved-segment references expanded into the query. It stays
  well below protobuf's nesting limit (100: a ``Condition`` level is two messages, and a
  response wraps it in two more) and Python's recursion limit;
- ``MAX_CONDITIONS``: leaf conditions of a query, references to dynamic saved segments
  expanded;
- ``MAX_LIST_VALUES``: values of one ``in`` / ``not_in`` / ``contains_*`` list;
- ``MAX_FILTERS``: filters in one event condition's ``where`` (the scan kernel applies
  at most 16 per row).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from segd.errors import DeadlineExceeded, TooComplex, shorten

MAX_DSL_CHARS = 100_000
MAX_DEPTH = 32
MAX_CONDITIONS = 1_000
MAX_LIST_VALUES = 10_000
MAX_FILTERS = 16
# Parsed DSL texts kept by the engine, bounded by an estimate of the bytes they hold.
PARSE_CACHE_BYTES = 32 * 1024 * 1024
# Parsing and conversion look at the clock (and the client) every this many steps.
CHECK_EVERY = 256


def too_deep(where: str, depth: int | None = None) -> TooComplex:
    where = shorten(where)
    got = f" (got {depth})" if depth is not None else ""
    return TooComplex(
        f"{where}: conditions nested deeper than MAX_DEPTH = {MAX_DEPTH} levels{got}",
        limit="MAX_DEPTH",
        maximum=MAX_DEPTH,
        actual=depth,
        where=where,
    )


def too_many_conditions(where: str, count: int | None = None) -> TooComplex:
    where = shorten(where)
    got = f" (got {count})" if count is not None else ""
    return TooComplex(
        f"{where}: more than MAX_CONDITIONS = {MAX_CONDITIONS} conditions in one "
        f"query{got}",
        limit="MAX_CONDITIONS",
        maximum=MAX_CONDITIONS,
        actual=count,
        where=where,
    )


def too_many_values(where: str, count: int) -> TooComplex:
    where = shorten(where)
    return TooComplex(
        f"{where}: a list of {count} values is longer than MAX_LIST_VALUES = "
        f"{MAX_LIST_VALUES}",
        limit="MAX_LIST_VALUES",
        maximum=MAX_LIST_VALUES,
        actual=count,
        where=where,
    )


def check_text_length(text: str, where: str = "dsl") -> None:
    if len(text) > MAX_DSL_CHARS:
        raise TooComplex(
            f"{where}: the segment text has {len(text)} characters, more than "
            f"MAX_DSL_CHARS = {MAX_DSL_CHARS}",
            limit="MAX_DSL_CHARS",
            maximum=MAX_DSL_CHARS,
            actual=len(text),
            where=where,
        )


class Budget:
    """The caller's deadline (``time.monotonic()`` value) and cancellation, polled cheaply.

    ``tick()`` is called once per step of parsing or conversion; every ``CHECK_EVERY``
    steps it looks at the clock and asks ``cancelled()`` (e.g. "the gRPC client has
    gone"), raising ``DeadlineExceeded`` so that abandoned requests stop working.
    """

    __slots__ = ("deadline", "cancelled", "_steps")

    def __init__(
        self,
        deadline: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.deadline = deadline
        self.cancelled = cancelled
        self._steps = 0

    def tick(self) -> None:
        self._steps += 1
        if self._steps % CHECK_EVERY == 0:
            self.check()

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceeded("deadline exceeded while reading the query")
        if self.cancelled is not None and self.cancelled():
            raise DeadlineExceeded("the caller cancelled the request")


def budget_of(deadline: float | Budget | None) -> Budget | None:
    """A ``Budget`` from what engine methods accept as ``deadline``."""
    if deadline is None or isinstance(deadline, Budget):
        return deadline
    return Budget(deadline)
