"""ORs of ANDs that count events of one log window: one pass for all the groups.

``(city = A and view(category = X) count >= 3 in last 30 days and orders_count >= 2) or
(city = B and view(category = Y) count >= 2 in last 30 days and orders_count >= 1) or
...`` (the bench's ``stress_or``: ten such groups). Each AND runs its cheap operands first
and decides the event count per remaining candidate by the candidate's own rows
(``contactindex.count_filtered_of_contacts``): a few cache misses per candidate, ~0.4 us
at 1M contacts, 95k candidates in ten groups ~40 ms. When the groups' candidates
together are many next to the window's rows, the event operands of all the groups are
decided instead by one pass over the window in row order (``groupscan.count_groups``:
per row a mask of the groups whose filter admits its code, a bit test in the L2-resident
bitset of every group's candidates, a counter per (candidate, group)).

Exact by construction: an AND is its other operands' result (run by the AND's own
machinery: index-first, candidate-first, memo) intersected with the event operand's
verdict on those candidates, which is what the pass computes (the rows of the window
whose contact is the candidate and whose code passes the filter, counted against the
condition's bounds, as ``count_filtered_of_contacts`` and ``eventscan`` count them). An
AND the pass does not pay for is finished as before (its event operand over its
candidates). Only ANDs whose single event operand has code filters on one dimension at
most and no amount filter, sum, distinct count or "then no", without NOT operands and
not shared, are grouped; the rest of the OR runs as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pyroaring import BitMap

from segd.native import groupscan
from segd.native.bitset import cids_to_bitmap
from segd.segments.context import Context

if TYPE_CHECKING:
    from segd.segments.event_node import EventNode
    from segd.segments.plan import AndNode, Node

# A candidate decided by its own contact-major rows costs about as much as this many
# rows of the one-pass window scan (1M contacts, CPU, BENCHMARKS.md "The lowest ratios":
# ~0.4 us per candidate, ~6.3 ns per window row with 20% of the rows the candidates'):
# the groups are counted in one pass when their candidates times this exceed the window.
CANDIDATE_ROWS = 60
MAX_GROUPS = 32  # groups one pass of the kernel counts
# A switch for measurements (old and new paths alternated in one process) and tests.
ENABLED = True


class _Group:
    """One AND of the OR: its event operand and the operands run before it."""

    __slots__ = ("index", "part", "event", "others")

    def __init__(self, index: int, part: AndNode, event: EventNode, others: list):
        self.index = index
        self.part = part
        self.event = event
        self.others = others


class _Bucket:
    """The groups whose event operands read the same log, window and code column."""

    def __init__(self, etype: str, lo_s: int, hi_s: int, dim: str | None) -> None:
        self.etype, self.lo_s, self.hi_s, self.dim = etype, lo_s, hi_s, dim
        self.groups: list[_Group] = []
        self.code_groups = np.zeros(0, dtype=np.uint32)
        self.always = 0
        self.count_min = np.zeros(0, dtype=np.uint32)
        self.count_max = np.zeros(0, dtype=np.uint32)

    def seal(self) -> None:
        """Per code, the mask of the groups whose filter admits it; bounds per group."""
        masks = [g.event.filters.code_filters for g in self.groups]
        size = max((len(f[0][1]) for f in masks if f), default=0)
        code_groups = np.zeros(size, dtype=np.uint32)
        always = 0
        for k, filters in enumerate(masks):
            if not filters:
                always |= 1 << k
                continue
            mask = filters[0][1]
            code_groups[: len(mask)] |= (mask != 0).astype(np.uint32) << np.uint32(k)
        self.code_groups, self.always = code_groups, always
        top = 2**32 - 1
        self.count_min = np.array(
            [min(g.event.count_min, top) for g in self.groups], dtype=np.uint32
        )
        self.count_max = np.array(
            [min(g.event.count_max, top) for g in self.groups], dtype=np.uint32
        )


def _groupable(index: int, part: Node) -> _Group | None:
    if part.kind != "and" or part.shared:
        return None
    parts = part.children()
    if any(p.kind == "not" for p in parts):
        return None
    events = [p for p in parts if p.kind == "event"]
    if len(events) != 1 or len(parts) < 2:
        return None
    event: EventNode = events[0]  # type: ignore[assignment]
    if not event._counts_only or len(event.filters.code_filters) > 1:
        return None
    others = [p for p in parts if p is not event]
    return _Group(index, part, event, others)  # type: ignore[arg-type]


def buckets(parts: list[Node]) -> list[_Bucket]:
    """The OR's groupable ANDs by (log, window, code column), two or more per bucket
    (at most ``MAX_GROUPS``: a larger set is split)."""
    by_key: dict[tuple, _Bucket] = {}
    made: list[_Bucket] = []
    for i, part in enumerate(parts):
        group = _groupable(i, part)
        if group is None:
            continue
        e = group.event
        dim = e.filters.code_filters[0][0] if e.filters.code_filters else None
        key = (e.etype, e.lo_s, e.hi_s, dim)
        bucket = by_key.get(key)
        if bucket is None or len(bucket.groups) == MAX_GROUPS:
            bucket = by_key[key] = _Bucket(e.etype, e.lo_s, e.hi_s, dim)
            made.append(bucket)
        bucket.groups.append(group)
    out = [b for b in made if len(b.groups) >= 2]
    for bucket in out:
        bucket.seal()
    return out


def run_bucket(ctx: Context, bucket: _Bucket, cand: BitMap | None) -> BitMap:
    """The union of the bucket's ANDs over `cand` (None: everyone)."""
    log = ctx.store.logs.get(bucket.etype)
    cands = []
    for g in bucket.groups:
        got = g.part.run_operands(ctx, cand, g.others)
        cands.append(got)
    codes = None
    if log is not None:
        codes = log.dim(bucket.dim) if bucket.dim is not None else log.cid
    if log is None or codes is None:
        # no row of that log / column: each event operand decides alone (nobody, or
        # everyone for a count that zero satisfies)
        return BitMap.union(
            BitMap(),
            *(g.event.run(ctx, c) for g, c in zip(bucket.groups, cands, strict=True)),
        )
    r0, r1 = log.window(bucket.lo_s, bucket.hi_s)
    total = sum(len(c) for c in cands)
    if total * CANDIDATE_ROWS < r1 - r0:
        return BitMap.union(
            BitMap(),
            *(
                g.part.finish(ctx, c, g.event)
                for g, c in zip(bucket.groups, cands, strict=True)
            ),
        )
    ctx.check_deadline()
    arrays = [np.frombuffer(c.to_array(), dtype=np.uint32) for c in cands]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
    ends = np.cumsum([len(a) for a in arrays]).astype(np.intp)
    kept = groupscan.count_groups(
        log.cid,
        codes,
        r0,
        r1,
        bucket.code_groups if bucket.dim is not None else np.zeros(0, np.uint32),
        bucket.always,
        flat,
        ends,
        bucket.count_min,
        bucket.count_max,
    )
    return cids_to_bitmap(kept)
