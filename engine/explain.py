"""Typed results of ``Engine.explain`` and ``Engine.profile`` (docs/engine-api.md).

**Explain** answers "who matches each part of this query, and why is (or is not) this
contact a member?". The query is compiled once and its plan evaluated once, node by node,
over the whole base: the result is the query's real condition tree (``and`` / ``or`` /
``not`` / segment references / leaves) where every node carries

- ``count``: the contacts of the *whole base* that match that sub-condition as of ``now``
  (``COUNT_MEANING``) — not the share left among the parent's candidates, so a node's count
  means the same wherever it sits, and a parent's count follows from its children's (an
  ``and`` is the intersection, an ``or`` the union, ``not`` the complement);
- ``matched``: the contact's verdict for that node (when a customer id was given);
- ``evidence``: the contact's facts that decide a leaf (its attribute value, aggregate,
  matching events) or a segment reference;
- ``ms``: the time its evaluation took (children included).

Because every node is evaluated once over the whole base, its verdict for the contact is
a bitmap lookup: no second pass per contact, and the root's count is the segment's count.

**Profile** is the plan *as the segment evaluator runs it* (AND operands in the order the
planner picked, each restricted to the candidates left): per step the condition, its
result size, the candidates it looked at and milliseconds. Use it to see where time goes;
use explain to see what matches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyroaring import BitMap

from segd.results import QueryWarning

COUNT_MEANING = "contacts in the whole base matching this sub-condition as of now"


# -- evidence ------------------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else repr(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return str(value)


@dataclass(frozen=True)
class AttributeEvidence:
    """The contact's value of the attribute a condition tests (None = NULL)."""

    attribute: str
    value: Any  # str, int, float, bool, datetime (timestamps, UTC), list (tags) or None
    derived_from: str | None = None  # "birth_date" for age

    def summary(self) -> str:
        text = f"{self.attribute} = {_shown(self.value)}"
        return f"{text} (from {self.derived_from})" if self.derived_from else text


@dataclass(frozen=True)
class AggregateEvidence:
    """The contact's value of an aggregate (orders_count, revenue, days_since_...)."""

    aggregate: str
    value: int | float | None  # None: no qualifying events (days_since_*, averages)

    def summary(self) -> str:
        return f"{self.aggregate} = {_shown(self.value)}"


@dataclass(frozen=True)
class EventEvidence:
    """The contact's events that satisfy an event condition's filters in its window.

    ``matching_events`` counts events passing type, filters, window and "then no"
    (``then_no``: the event that must not follow, and within how long);
    ``last_times`` shows up to the 10 most recent of them (UTC, oldest first); the
    condition holds when that number (and ``sum``, if it has one) is in range.
    """

    event: str
    matching_events: int
    window_from: datetime | None  # None: unbounded
    window_to: datetime | None
    count_min: int
    count_max: int | None  # None: no upper bound
    last_times: tuple[datetime, ...] = ()
    sum: float | None = None
    then_no: str | None = None  # "order within 1d": counted events are not followed so
    # After identity merges: (original customer_id, matching events) of the events that
    # came from contacts merged into this one.
    merged_from: tuple[tuple[str, int], ...] = ()

    def summary(self) -> str:
        n = self.matching_events
        text = f"{n} matching {self.event} event{'s' if n != 1 else ''}"
        if self.then_no:
            text += f" with no {self.then_no} after"
        if self.sum is not None:
            text += f", sum {self.sum:g}"
        if self.last_times:
            text += f", last {_shown(self.last_times[-1])}"
        if self.merged_from:
            text += ", from merged " + ", ".join(
                f"{c} ({k})" for c, k in self.merged_from
            )
        return text


@dataclass(frozen=True)
class SegmentEvidence:
    """A reference to a saved segment: static (frozen members) or dynamic (inlined)."""

    segment: str
    static: bool

    def summary(self) -> str:
        kind = "static" if self.static else "dynamic"
        return f"{kind} segment {self.segment!r}"


Evidence = AttributeEvidence | AggregateEvidence | EventEvidence | SegmentEvidence


# -- explain -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainNode:
    """One condition of the query's tree.

    ``kind``: and, or, not, attr, event, aggregate, rfm or segment. ``operator``: and, or,
    not, segment (a saved-segment reference), then_no (an event followed by no other
    event), count (any other event condition: a count / sum range over matching events),
    or a leaf's comparison (=, !=, <, <=, >, >=, between, in, not_in, is_null,
    is_not_null, prefix, contains, contains_any, contains_all). ``label``: the node as
    DSL text. ``count``: see ``COUNT_MEANING``. ``matched`` / ``evidence``: None unless a
    contact is explained (evidence also None for and / or / not).
    """

    kind: str
    operator: str
    label: str
    count: int
    ms: float
    matched: bool | None = None
    evidence: Evidence | None = None
    children: tuple[ExplainNode, ...] = ()

    def walk(self) -> Iterator[ExplainNode]:
        """This node and every node below it, parents first."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


@dataclass(frozen=True)
class Explanation:
    """What ``Engine.explain`` returns: the evaluated tree and, optionally, one contact.

    ``count`` is the segment's member count (the root's count), out of ``contacts`` in
    the base; ``count_meaning`` says what every node's count counts. With a customer id,
    ``member`` is the contact's verdict and ``attributes`` all its attribute values.
    ``warnings``: values that exist nowhere in the data (the count is still exact).
    """

    query: str
    now: datetime
    contacts: int
    count: int
    ms: float
    root: ExplainNode
    customer_id: str | None = None
    member: bool | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[QueryWarning, ...] = ()
    count_meaning: str = COUNT_MEANING


def explain_tree(plan: Any, ctx: Any, cid: int | None) -> tuple[ExplainNode, BitMap]:
    """Evaluate `plan` once over the whole base, node by node (see module docstring).

    Returns the root ``ExplainNode`` and the root's members. `cid` (or None) is the
    contact whose verdict and evidence each node records.
    """
    from segd.segments.plan import AndNode, ConstNode, NotNode, OrNode, RefNode

    t0 = time.perf_counter()
    ctx.check_deadline()
    children: list[ExplainNode] = []
    if isinstance(plan, AndNode | OrNode):
        parts = []
        for part in plan.parts:
            node, bitmap = explain_tree(part, ctx, cid)
            children.append(node)
            parts.append(bitmap)
        if len(parts) == 1:
            members = parts[0]
        elif isinstance(plan, AndNode):
            members = BitMap.intersection(*parts)
        else:
            members = BitMap.union(*parts)
        operator = plan.kind
    elif isinstance(plan, NotNode):
        node, inner = explain_tree(plan.inner, ctx, cid)
        children.append(node)
        members = ctx.universe - inner
        operator = "not"
    elif isinstance(plan, RefNode):
        node, members = explain_tree(plan.inner, ctx, cid)
        children.append(node)
        operator = "segment"
    else:
        members = plan.run(ctx, None)
        operator = "segment" if isinstance(plan, ConstNode) else _leaf_operator(plan)
    matched = None if cid is None else cid in members
    evidence = None if cid is None else plan.evidence(ctx, cid)
    node = ExplainNode(
        kind=plan.kind,
        operator=operator,
        label=plan.label,
        count=len(members),
        ms=round((time.perf_counter() - t0) * 1000, 3),
        matched=matched,
        evidence=evidence,
        children=tuple(children),
    )
    return node, members


def _leaf_operator(plan: Any) -> str:
    ast = plan.ast
    if "event" in ast:
        return "then_no" if "then_no" in ast else "count"
    return str(ast.get("op", plan.kind))


# -- profile -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileStep:
    """One plan node as run: ``count`` members it returned, out of ``candidates``
    contacts it was asked about (None: the whole base), in ``ms`` (children included)."""

    label: str
    kind: str
    ms: float
    count: int
    candidates: int | None


@dataclass(frozen=True)
class Profile:
    """What ``Engine.profile`` returns: the steps in the order they ran (a parent before
    its children; a sub-expression that occurs twice runs once)."""

    query: str
    count: int
    contacts: int
    ms: float
    steps: tuple[ProfileStep, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON reports and worker processes)."""
        return {
            "query": self.query,
            "count": self.count,
            "contacts": self.contacts,
            "ms": self.ms,
            "steps": [
                {
                    "condition": s.label,
                    "kind": s.kind,
                    "ms": s.ms,
                    "count": s.count,
                    "candidates": s.candidates,
                }
                for s in self.steps
            ],
        }
