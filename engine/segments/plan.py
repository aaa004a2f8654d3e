"""Compile a canonical segment AST into a plan of nodes, and run it over roaring bitmaps.

Each node evaluates to a ``BitMap`` of contact ids. ``run(ctx, cand)`` may be given the
contacts that are still candidates (the running result of an AND): the node then only
decides those, returning a subset of `cand` — attribute scans look at the candidate ids
instead of the whole column, event scans skip other contacts. AND runs its operands from
the most selective (smallest estimate) and stops at the first empty result; negative
operands (NOT) run last as set differences. A sub-expression that occurs more than once in
a query is evaluated once, unrestricted, and reused (``Node.shared``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from pyroaring import BitMap

from segd.errors import InvalidQuery
from segd.explain import Evidence, SegmentEvidence
from segd.segments.context import Context, store_state

if TYPE_CHECKING:
    from segd.aggindex import Answer

# Candidate-first plans (AndNode._few): below this share of the base, an AND decides its
# remaining operands per candidate (pair kernels) instead of a bitmap per operand.
# Measured at 1M (CPU ms, one loaded run, BENCHMARKS.md): the reference segment 17.7 ->
# 11.6 at 0.2%; at 2% three suite queries got slower (viewed_category 5.8 -> 8.0).
CANDIDATE_FIRST_SHARE = 0.002
# Index-first ANDs (AndNode._by_indexes): the next operand's index answer is intersected
# (a bit test per contact of its slices) while it holds at most this many contacts per
# running candidate; a larger one is decided per candidate instead (a gather from a
# column of the whole base, a cache miss each: ~30 ns at 1M contacts).
PROBE_PER_CANDIDATE = 4
# AndNode._unrestricted: an unrestricted AND reuses its operand order while the moment
# and the store's state are the same (False: estimated on every run; for A/B runs).
KEEP_UNRESTRICTED_ORDER = True


class Node:
    """A plan node; subclasses implement ``_run``, ``estimate`` and ``evidence``."""

    kind = "node"
    shared = False  # set by compile when the same sub-expression occurs again

    def __init__(self, ast: dict, key: str) -> None:
        self.ast = ast
        self.key = key

    @property
    def label(self) -> str:
        from segd.segments.dsl import format as format_dsl

        try:
            return format_dsl(self.ast)
        except Exception:  # a label is for people; never fail a query over it
            return str(self.ast)

    def estimate(self, ctx: Context) -> float:
        """Rough number of matching contacts, for ordering AND operands."""
        return ctx.n / 2

    def children(self) -> list[Node]:
        return []

    def index_count(self, ctx: Context) -> int | None:
        """How many contacts the node's value index answers (None: no index)."""
        return None

    def index_answer(self, ctx: Context) -> Answer | None:
        """The node's members exactly, as slices of a value index (``segd.aggindex``);
        None when no index answers on its own (no index, or contacts to re-check)."""
        return None

    def cost(self, ctx: Context) -> float:
        """Rough work per candidate contact (1 = look at one column value)."""
        return 1.0

    def run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        """Members (restricted to `cand` when given), with memo, deadline and profile."""
        ctx.check_deadline()
        if self.shared:
            hit = ctx.memo.get(self.key)
            if hit is None:
                hit = ctx.memo[self.key] = self._timed(ctx, None)
            return hit if cand is None else hit & cand
        return self._timed(ctx, cand)

    def _timed(self, ctx: Context, cand: BitMap | None) -> BitMap:
        if ctx.profile is None:
            return self._run(ctx, cand)
        from segd.explain import ProfileStep

        slot = len(ctx.profile)
        ctx.profile.append(None)  # a parent is listed before the children it runs
        t0 = time.perf_counter()
        out = self._run(ctx, cand)
        ctx.profile[slot] = ProfileStep(
            label=self.label,
            kind=self.kind,
            ms=round((time.perf_counter() - t0) * 1000, 3),
            count=len(out),
            candidates=None if cand is None else len(cand),
        )
        return out

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        raise NotImplementedError

    def evidence(self, ctx: Context, cid: int) -> Evidence | None:
        """The contact's facts that decide this node (explain); None for and / or / not."""
        return None


class _Junction(Node):
    """AND / OR: a list of operands."""

    def __init__(self, ast: dict, key: str, parts: list[Node]) -> None:
        super().__init__(ast, key)
        self.parts = parts

    def children(self) -> list[Node]:
        return self.parts


class AndNode(_Junction):
    kind = "and"
    # Set on plans reused for many small runs (segd.live): the operand order of the
    # first restricted run is kept instead of estimating every operand each time.
    keep_order = False
    _kept: list[Node] | None = None
    # The operand order of the last unrestricted run whose value indexes did not
    # answer (``_by_indexes`` None), with the state it was chosen for
    # (``_unrestricted_state``): the estimates behind it cost ~0.9 ms at 10M (twelve
    # operands), and an Engine keeps a plan for one `now` until the next write, so a
    # repeated query reuses them. The order never changes the answer, only its cost.
    _unrestricted: tuple[tuple, list[Node]] | None = None

    def estimate(self, ctx: Context) -> float:
        positives = [p.estimate(ctx) for p in self.parts if not isinstance(p, NotNode)]
        return min(positives) if positives else ctx.n / 2

    def cost(self, ctx: Context) -> float:
        return sum(p.cost(ctx) for p in self.parts)

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        positives = [p for p in self.parts if not isinstance(p, NotNode)]
        negatives = [p.inner for p in self.parts if isinstance(p, NotNode)]
        if cand is None and ctx.profile is None:
            # the value indexes are asked every run (an index built since, by another
            # query, may answer now); only the order of the rest is kept
            got = self._by_indexes(ctx, positives, negatives)
            if got is not None:
                return got
            state = _unrestricted_state(ctx) if KEEP_UNRESTRICTED_ORDER else None
            kept = self._unrestricted
            if state is not None and kept is not None and kept[0] == state:
                return self._conjoin(ctx, cand, kept[1], negatives)
            positives = self._order(ctx, positives, True)
            if state is not None:
                self._unrestricted = (state, positives)
            return self._conjoin(ctx, cand, positives, negatives)
        if cand is not None and self.keep_order and self._kept is not None:
            positives = self._kept
        else:
            positives = self._order(ctx, positives, cand is None)
            if cand is not None and self.keep_order:
                self._kept = positives
        return self._conjoin(ctx, cand, positives, negatives)

    def run_operands(
        self, ctx: Context, cand: BitMap | None, positives: list[Node]
    ) -> BitMap:
        """The contacts of `cand` (None: everyone) that pass `positives`, some of this
        AND's positive operands, by the AND's own machinery (index-first,
        candidate-first): an OR of ANDs decides the rest of each AND itself
        (``segd.segments.or_groups``)."""
        if cand is None and ctx.profile is None:
            got = self._by_indexes(ctx, positives, [])
            if got is not None:
                return got
        return self._conjoin(ctx, cand, self._order(ctx, positives, cand is None), [])

    def finish(self, ctx: Context, cand: BitMap, part: Node) -> BitMap:
        """The contacts of `cand` that pass operand `part` too (``run_operands``'
        other half)."""
        return self._conjoin(ctx, cand, [part], [])

    def _by_indexes(
        self, ctx: Context, positives: list[Node], negatives: list[Node]
    ) -> BitMap | None:
        """Index-first: when the most selective operand is a value-index answer of at
        most ``n / SORT_SHARE`` contacts, intersect it with the other operands' index
        answers natively (``aggindex.intersect``: no sort, no bitmap per operand), each
        whose answer is at most ``PROBE_PER_CANDIDATE`` times the running one; the
        rest is decided per candidate (pairs) or, for many candidates and operands
        without a cheap per-candidate check, by the usual bitmap path. None: not
        applicable (no index answer, or a larger one)."""
        from segd import aggindex
        from segd.native.bitset import cids_to_bitmap
        from segd.segments.pairs import decide_cids

        answers: list[tuple[int, Node, Answer]] = []
        others: list[Node] = []
        for p in positives:
            got = p.index_answer(ctx)
            if got is None:
                others.append(p)
            else:
                answers.append((got.total, p, got))
        if not answers:
            return None
        answers.sort(key=lambda t: t[0])
        smallest, _, first = answers[0]
        n = ctx.n
        if smallest == 0:
            return BitMap()
        if smallest > n // aggindex.SORT_SHARE:
            return None
        if any(p.estimate(ctx) < smallest for p in others):
            return None  # a condition without an index leads: the usual order
        ctx.check_deadline()
        cids = first.ids()
        ascending = first.ids_sorted()
        rest: list[Node] = []
        for total, part, got in answers[1:]:
            if total > PROBE_PER_CANDIDATE * len(cids):
                rest.append(part)  # a gather per candidate costs less than the probe
                continue
            cids = aggindex.intersect(cids, got, n)  # in `got`'s order
            ascending = got.ids_sorted()
            if not len(cids):
                return BitMap()
        rest += others
        if rest and not ctx.store.contacts.merged:
            rest, cids = _by_last_seen(ctx, rest, cids)
            if not len(cids):
                return BitMap()
        gathers = all(_cheap_per_candidate(p) for p in rest + negatives)
        if (rest or negatives) and (gathers or len(cids) < CANDIDATE_FIRST_SHARE * n):
            if not ascending and not gathers:  # event kernels walk contacts in order
                cids, ascending = np.sort(cids), True
            kept = decide_cids(ctx.store, cids, ctx.now_s, rest, negatives)
            # gathers cost the same in any order: only the survivors are sorted
            return cids_to_bitmap(kept if ascending else np.sort(kept))
        if not ascending:
            cids = np.sort(cids)
        result = cids_to_bitmap(cids)
        merged = ctx.store.contacts.merged
        if merged:
            result -= merged
        if not rest and not negatives:
            return result
        return self._conjoin(ctx, result, self._order(ctx, rest, False), negatives)

    def _conjoin(
        self,
        ctx: Context,
        cand: BitMap | None,
        positives: list[Node],
        negatives: list[Node],
    ) -> BitMap:
        """Run the ordered `positives` over `cand` (None: everyone), then take out
        the `negatives`."""
        result = cand
        for k, part in enumerate(positives):
            if result is not None and self._few(ctx, result):
                return self._decide_pairs(ctx, result, positives[k:], negatives)
            got = part.run(ctx, result)
            result = got if result is None else got & result
            if not result:
                return BitMap()
        if result is not None and negatives and self._few(ctx, result):
            return self._decide_pairs(ctx, result, [], negatives)
        if result is None:
            result = ctx.universe
        for part in negatives:
            if not result:
                break
            result = result - part.run(ctx, result)
        return result

    @staticmethod
    def _few(ctx: Context, result: BitMap) -> bool:
        """Candidate-first: once the operands run so far leave fewer than
        ``CANDIDATE_FIRST_SHARE`` of the base, deciding the rest per candidate (pair
        kernels) beats a bitmap per operand. Not while profiling (explain lists each
        operand's step)."""
        return ctx.profile is None and len(result) < CANDIDATE_FIRST_SHARE * ctx.n

    @staticmethod
    def _decide_pairs(
        ctx: Context, result: BitMap, positives: list[Node], negatives: list[Node]
    ) -> BitMap:
        """The candidates of `result` that pass every positive and no negative operand,
        decided per candidate at ``ctx.now_s`` (``segd.segments.pairs``)."""
        from segd.segments.pairs import decide

        ctx.check_deadline()
        return decide(ctx.store, result, ctx.now_s, positives, negatives)

    @staticmethod
    def _order(ctx: Context, parts: list[Node], unrestricted: bool) -> list[Node]:
        """The order to run AND operands in.

        Without candidates the most selective operand goes first (it sets how many
        contacts everything after it looks at). After that, the classic rank for
        conjunctive filters: cost per candidate / share of candidates it removes, so a
        cheap bitmap condition that halves the set runs before an event scan that
        removes a little more.
        """
        if not parts:
            return parts
        n = max(1.0, float(ctx.n))
        est = {id(p): p.estimate(ctx) for p in parts}
        rest = list(parts)
        first = []
        if unrestricted:
            best = min(rest, key=lambda p: est[id(p)])
            rest.remove(best)
            first = [best]

        def rank(p: Node) -> float:
            removed = max(1e-6, 1.0 - min(1.0, est[id(p)] / n))
            return p.cost(ctx) / removed

        return first + sorted(rest, key=rank)


def _unrestricted_state(ctx: Context) -> tuple:
    """What an unrestricted AND's operand order was chosen for (``AndNode._unrestricted``):
    the moment and the store's state."""
    return (ctx.now_s, store_state(ctx.store))


def _by_last_seen(
    ctx: Context, rest: list[Node], cids: np.ndarray
) -> tuple[list[Node], np.ndarray]:
    """Take the event operands that the last-seen rollup decides ("at least one order
    / email open in [a, b)", unfiltered) out of `rest`, keeping the `cids` that pass
    them (one branch-free gather each, ``EventNode.keep_by_last_seen``), without the
    per-candidate machinery of ``pairs.decide_cids``: ``four_orders``' ``order()
    from ...`` over its ~1k index-first candidates. Merged contacts must be gone
    from `cids` (the caller checks there are none)."""
    still = []
    for part in rest:
        kept = None
        if part.kind == "event":
            kept = part.keep_by_last_seen(ctx, cids)  # type: ignore[attr-defined]
        if kept is None:
            still.append(part)
        else:
            cids = kept
            if not len(cids):
                break
    return still, cids


def _cheap_per_candidate(node: Node) -> bool:
    """Conditions the pair walk decides by a gather per candidate (a column or rollup
    value, a dictionary code): no event scan, no period rollup, no sub-expression."""
    return node.kind in ("attr", "aggregate") and not getattr(node, "period", None)


class OrNode(_Junction):
    kind = "or"

    def cost(self, ctx: Context) -> float:
        return sum(p.cost(ctx) for p in self.parts)

    def estimate(self, ctx: Context) -> float:
        return min(ctx.n, sum(p.estimate(ctx) for p in self.parts))

    # the ANDs counted together (``segd.segments.or_groups``), found on first run
    _buckets: list | None = None

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        from segd.segments import or_groups

        parts = self.parts
        results = []
        if ctx.profile is None and or_groups.ENABLED:
            if self._buckets is None:
                self._buckets = or_groups.buckets(parts)
            if self._buckets:
                done: set[int] = set()
                for bucket in self._buckets:
                    results.append(or_groups.run_bucket(ctx, bucket, cand))
                    done.update(g.index for g in bucket.groups)
                parts = [p for i, p in enumerate(parts) if i not in done]
        results += [p.run(ctx, cand) for p in parts]
        return BitMap.union(*results) if len(results) > 1 else results[0]


class NotNode(Node):
    kind = "not"

    def __init__(self, ast: dict, key: str, inner: Node) -> None:
        super().__init__(ast, key)
        self.inner = inner

    def children(self) -> list[Node]:
        return [self.inner]

    def estimate(self, ctx: Context) -> float:
        return max(0.0, ctx.n - self.inner.estimate(ctx))

    def cost(self, ctx: Context) -> float:
        return self.inner.cost(ctx)

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        base = ctx.universe if cand is None else cand
        return base - self.inner.run(ctx, cand)


class ConstNode(Node):
    """A fixed member set: a static segment's frozen members, or a dynamic segment's
    live members when the query is asked at the engine clock (``static=False``)."""

    kind = "segment"

    def __init__(
        self, ast: dict, key: str, members: BitMap, name: str, static: bool = True
    ) -> None:
        super().__init__(ast, key)
        self.members = members
        self.name = name
        self.static = static

    def estimate(self, ctx: Context) -> float:
        return len(self.members)

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        return self.members if cand is None else self.members & cand

    def evidence(self, ctx: Context, cid: int) -> Evidence | None:
        return SegmentEvidence(self.name, static=self.static)


class RefNode(Node):
    """A dynamic saved segment, inlined: its plan runs here."""

    kind = "segment"

    def __init__(self, ast: dict, key: str, inner: Node, name: str) -> None:
        super().__init__(ast, key)
        self.inner = inner
        self.name = name

    def children(self) -> list[Node]:
        return [self.inner]

    def estimate(self, ctx: Context) -> float:
        return self.inner.estimate(ctx)

    def cost(self, ctx: Context) -> float:
        return self.inner.cost(ctx)

    def _run(self, ctx: Context, cand: BitMap | None) -> BitMap:
        return self.inner.run(ctx, cand)

    def evidence(self, ctx: Context, cid: int) -> Evidence | None:
        return SegmentEvidence(self.name, static=False)


def unknown(where: str, what: str, suggestion: str = "") -> InvalidQuery:
    return InvalidQuery.at(where, f"{what}{suggestion}")
