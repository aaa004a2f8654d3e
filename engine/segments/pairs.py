"""Evaluate a compiled plan for (contact, moment) pairs.

Live segments ask two kinds of small questions that a whole-base run answers badly:
after a write, "do these few touched contacts match now?", and while the clock moves,
"does contact c match at the exact second s when one of its events leaves a window?".
Both are a list of pairs ``(cids[i], nows[i])``; the answer is one boolean per pair,
``cids[i]`` in ``Engine.segment(query, now=nows[i])``.

``evaluate_pairs`` is the entry point callers use. ``evaluate_pairs_reference`` is the
plain definition — one restricted ``plan.run`` per distinct moment — kept as the oracle
that the fast path is tested against.

The fast path walks the plan once over arrays of pair indices (``_Pairs.run``): the cost
is proportional to the pairs, never to the contacts of the base (no n-bit bitset, no
whole-column scan, no plan run per moment):

- attributes (numeric, text, tags), derived ``age`` and all-time aggregates
  (``orders_count``, ``revenue``, ``avg_order_value``, ``days_since_*``) are numpy
  gathers over the pairs' rows, with each pair's own `now` where the condition reads it;
- an event condition is one nogil kernel call (``segd.native.pairscan.event_pairs``): per
  pair two binary searches in the contact's rows of the contact-major index (and of the
  unindexed tail) for the window ``[ceil(now - W), ceil(now))``, then a look at those rows
  for filters, counts, sums, distinct orders and "then no";
- AND decides its operands on the pairs still undecided (cheap operands first), OR
  likewise on the pairs not yet true, NOT negates; static segments are a membership test,
  references evaluate the referenced plan on the pairs, ``rfm.r/f/m/code/segment`` a
  membership test in the current computation; merged contacts never match.

Falls back to the reference (one restricted run per distinct moment, for that sub-tree
only): aggregates over a period (``orders_count in last 30 days``) and
``rfm.entered ...``.

``decide`` is the same walk for the rest of an AND over a candidate bitmap at one moment:
``Engine.segment``'s candidate-first plans (``plan.CANDIDATE_FIRST_SHARE``).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import numpy as np
from pyroaring import BitMap

from segd.native import pairscan
from segd.native.bitset import cids_to_bitmap
from segd.predicates import INF, integer_range
from segd.segments.context import Context, store_state
from segd.segments.registry import SEGMENT_EVENT_TYPES
from segd.store import Store
from segd.timeutil import DAY_S, MAX_EVENT_S, duration_s, period_bounds_s


def _validated(cids: Any, nows: Any) -> tuple[np.ndarray, np.ndarray]:
    c = np.ascontiguousarray(cids, dtype=np.uint32)
    t = np.ascontiguousarray(nows, dtype=np.float64)
    if c.ndim != 1 or t.shape != c.shape:
        raise ValueError(
            f"cids and nows must be 1-d arrays of one length (got {c.shape} and {t.shape})"
        )
    return c, t


def evaluate_pairs_reference(
    plan: Any, store: Store, cids: Any, nows: Any
) -> np.ndarray:
    """``out[i]`` is whether contact ``cids[i]`` matches `plan` at ``nows[i]`` (epoch
    seconds). Pairs may come in any order and repeat. The plan is re-bound to each
    distinct moment (``segd.live.rebind``) and left bound to an unspecified one: callers
    that run it afterwards re-bind it first."""
    from segd.live import rebind

    c, t = _validated(cids, nows)
    out = np.zeros(len(c), dtype=bool)
    if not len(c):
        return out
    order = np.argsort(t, kind="stable")
    ts = t[order]
    bounds = np.flatnonzero(np.diff(ts)) + 1
    for lo, hi in zip(
        np.r_[0, bounds].tolist(), np.r_[bounds, len(ts)].tolist(), strict=True
    ):
        now = float(ts[lo])
        rows = order[lo:hi]
        rebind(plan, now)
        got = plan.run(Context(store, now, None), BitMap(c[rows]))
        if got:
            members = np.asarray(got.to_array(), dtype=np.uint32)
            out[rows] = np.isin(c[rows], members)
    return out


def evaluate_pairs(
    plan: Any,
    store: Store,
    cids: Any,
    nows: Any,
    *,
    memo: dict | None = None,
) -> np.ndarray:
    """As ``evaluate_pairs_reference``, by per-node pair kernels (module docstring).

    `memo`: a dict shared by calls over the same pairs and an unchanged store (the
    segments of one live flush): condition results over all pairs are kept in it by
    their canonical key, so a condition that several segments share is decided once.
    Calls with other pairs reset it. ValueError when a cid is not a contact of
    `store`. The plan may be left bound to another moment (as by the reference):
    callers that ``run`` it afterwards re-bind it.
    """
    c, t, active = _checked_pairs(store, cids, nows)
    out = np.zeros(len(c), dtype=bool)
    if not len(c):
        return out
    if memo is not None:
        seen = memo.get(_PAIRS_KEY)
        if seen is None or not (
            np.array_equal(seen[0], c) and np.array_equal(seen[1], t)
        ):
            memo.clear()
            memo[_PAIRS_KEY] = (c, t)
    if len(active):
        pairs = _Pairs(store, c, t, active, memo)
        out[active] = pairs.run(plan, active)
    return out


def _checked_pairs(
    store: Store, cids: Any, nows: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(cids, nows, active)``: ``active`` indexes the pairs whose contact is
    not merged away (merged contacts never match). ValueError for a cid that is not a
    contact of `store` or a NaN moment."""
    c, t = _validated(cids, nows)
    if not len(c):
        return c, t, np.zeros(0, dtype=np.intp)
    n = store.n_contacts
    top = int(c.max())
    if top >= n:
        raise ValueError(f"cid {top} is not a contact (there are {n})")
    if np.isnan(t).any():
        raise ValueError("nows must not be NaN")
    active = np.arange(len(c), dtype=np.intp)
    merged = store.contacts.merged
    if merged:
        active = active[~_member(merged, c)]
    return c, t, active


def evaluate_conjunction(
    parts: list[Any],
    store: Store,
    cids: Any,
    nows: Any,
    *,
    fused: bool = True,
    holder: Any = None,
) -> np.ndarray:
    """``out[i]``: contact ``cids[i]`` matches every node of `parts` at ``nows[i]`` (an
    AND of them; every pair for no parts). As ``evaluate_pairs`` for an AND node of
    `parts`: live segments decide the rest of a segment's top AND this way once its
    time-independent operands are known (``segd.livestatic``). Merged contacts never
    match.

    Pairs at one moment (a write) run as one fused program (``conjunction_program``)
    when every node has a leaf kind; otherwise, or with ``fused=False`` (the oracle
    of the fused path in the tests), by the per-node walk. `holder`: an object (the
    live segment's plan) that keeps the built program between calls (``_fused``)."""
    c, t, active = _checked_pairs(store, cids, nows)
    out = np.zeros(len(c), dtype=bool)
    if not len(active):
        return out
    if fused and t.min() == t.max():
        now = float(t[0])
        if holder is not None:
            got = _fused(holder, parts, store, now)
            program = None if got is None else got.program
        else:
            program = conjunction_program(parts, store, now)
        if program is not None:
            out[active] = program.run(np.ascontiguousarray(c[active])).view(bool)
            return out
    pairs = _Pairs(store, c, t, active, None)
    out[active] = pairs._AndNode(_Conjunction(parts), active)
    return out


def run_fused(
    fused: list[Any], store: Store, cids: np.ndarray, todo: np.ndarray
) -> np.ndarray:
    """bool ``[len(fused), len(cids)]``: ``out[s, i]`` = contact ``cids[i]`` matches
    the conjunction of ``fused[s]`` (a ``_Fused`` from ``_fused``, current) where
    ``todo[i, s]``; False elsewhere and for merged contacts. One
    ``pairscan.run_programs`` pass, contact by contact, for the segments of a live
    flush: event leaves of equal signature (condition and window) are decided once
    per contact whatever program holds them."""
    c = np.ascontiguousarray(cids, dtype=np.uint32)
    ask = np.ascontiguousarray(todo, dtype=np.uint8)
    if ask.shape != (len(c), len(fused)):
        raise ValueError(f"todo must be ({len(c)}, {len(fused)}), not {ask.shape}")
    if len(c) and int(c.max()) >= store.n_contacts:
        raise ValueError(f"cid {int(c.max())} is not a contact")
    merged = store.contacts.merged
    if merged and len(c):
        gone = _member(merged, c)
        if gone.any():
            ask = ask.copy()
            ask[gone] = 0
    keys: dict[tuple, int] = {}
    for f in fused:
        for leaf, signature in f.signatures:
            f.program.set_memo_key(leaf, keys.setdefault(signature, len(keys)))
    programs = [f.program for f in fused]
    return pairscan.run_programs(programs, c, ask).view(bool)


def conjunction_program(
    parts: list[Any], store: Store, now: float
) -> pairscan.PairProgram | None:
    """The AND of `parts` at `now` as one fused ``pairscan.PairProgram`` (a bytecode of
    leaves under AND / OR / NOT, run for every contact in one nogil pass); None when a
    node has no leaf kind (``_ProgramBuilder.leaf``: the caller falls back to the
    per-node walk). Built from the store's current arrays and event sources: valid
    while no column is replaced and no event log changes (``_fused`` keeps one per
    holder and re-links its event leaves when logs grew)."""
    fused = _ProgramBuilder(store, now).build(_Conjunction(parts))
    return None if fused is None else fused.program


def _fused(holder: Any, parts: list[Any], store: Store, now: float) -> Any:
    """`holder`'s fused program for `parts` at `now` (a ``_Fused``, or None when a node
    has no leaf kind), kept on the holder (a live segment's plan): rebuilt when the
    moment, the parts or an array a gather leaf reads changed; its event leaves are
    re-linked to the logs' current sources (rows appended since) at each call."""
    memo = holder.__dict__
    hit = memo.get("_fused_program")
    if (
        hit is not None
        and hit[0] == now
        and hit[1] is store
        and len(hit[2]) == len(parts)
        and all(a is b for a, b in zip(hit[2], parts, strict=True))
        and (hit[3] is None or hit[3].current())
    ):
        return hit[3]
    fused = _ProgramBuilder(store, now).build(_Conjunction(parts))
    memo["_fused_program"] = (now, store, tuple(parts), fused)
    return fused


class _Fused:
    """A built program, what its gather leaves read, and its event leaves' nodes."""

    def __init__(
        self,
        program: pairscan.PairProgram,
        store: Store,
        checks: list[tuple[Any, str, Any]],
        events: list[tuple[int, Any, tuple]],
        signatures: list[tuple[int, tuple]] | None = None,
        reads_published: bool = False,
    ) -> None:
        self.program = program
        self.store = store
        # (event leaf, what decides it: the condition's canonical key and window):
        # leaves of equal signatures agree per contact (``run_fused``'s memo keys)
        self.signatures = signatures or []
        # an event condition over the segment events a flush publishes: its answer
        # can change while a flush records (``segd.live`` runs it in turn)
        self.reads_published = reads_published
        # (owner, attribute, the object read): rebuilt once getattr(owner, attribute)
        # is another object; attribute "()": owner() is; "==": owner() differs
        self.checks = checks
        self.events = events  # (leaf, node, (source, then, distinct) linked)

    def current(self) -> bool:
        """Whether the gather leaves still read the store's arrays (then the event
        leaves are re-linked to their logs' current sources as needed)."""
        for owner, attr, seen in self.checks:
            if attr == "==":  # a state tuple
                if owner() != seen:
                    return False
                continue
            now = owner() if attr == "()" else getattr(owner, attr)
            if now is not seen:
                return False
        if not self.events:
            return True
        for k, (leaf, node, linked) in enumerate(self.events):
            got = _event_links(self.store, node)
            if got is None:  # the log is empty now (cannot happen while live)
                return False
            if any(a is not b for a, b in zip(got, linked, strict=True)):
                src, then, distinct = got
                self.program.relink_event(leaf, src, then, distinct)
                self.events[k] = (leaf, node, got)
        return True


def _event_links(store: Store, node: Any) -> tuple | None:
    """An event condition's current (source, then source, distinct column); None
    when its log is empty or its filters admit no row (a constant leaf)."""
    n = store.n_contacts
    log = store.logs.get(node.etype)
    src = None if log is None or log.n == 0 else _shared_source(log, node.filters, n)
    if src is None:
        return None
    assert log is not None  # a source exists only for a non-empty log
    then = None
    if node.then is not None:
        etype, _, then_filters = node.then
        then_log = store.logs.get(etype)
        if then_log is not None and then_log.n:
            then = _shared_source(then_log, then_filters, n)
    distinct = None
    if node.distinct_dim is not None:
        distinct = log.dim(node.distinct_dim)
    return src, then, distinct


class _ProgramBuilder:
    """Compiles plan nodes into a ``pairscan.PairProgram`` at one moment."""

    def __init__(self, store: Store, now: float) -> None:
        self.store = store
        self.now = now
        self.program = pairscan.PairProgram()
        self.ops: list[int] = []
        self.args: list[int] = []
        self.checks: list[tuple[Any, str, Any]] = []
        self.events: list[tuple[int, Any, tuple]] = []
        self.signatures: list[tuple[int, tuple]] = []
        self.reads_published = False

    def build(self, conjunction: _Conjunction) -> _Fused | None:
        self.ops.append(pairscan.AND)
        self.args.append(len(conjunction.parts))
        for part in sorted(conjunction.parts, key=_rank):
            if not self.node(part):
                return None
        self.program.set_tree(self.ops, self.args)
        return _Fused(
            self.program,
            self.store,
            self.checks,
            self.events,
            self.signatures,
            self.reads_published,
        )

    def _read(self, owner: Any, attr: str) -> Any:
        """``owner.attr``, noted: the program is rebuilt once it is another object."""
        got = getattr(owner, attr)
        self.checks.append((owner, attr, got))
        return got

    def node(self, node: Any) -> bool:
        kind = type(node).__name__
        if kind == "RefNode":
            return self.node(node.inner)
        if kind in ("AndNode", "OrNode"):
            self.ops.append(pairscan.AND if kind == "AndNode" else pairscan.OR)
            self.args.append(len(node.parts))
            return all(self.node(p) for p in sorted(node.parts, key=_rank))
        if kind == "NotNode":
            self.ops.append(pairscan.NOT)
            self.args.append(0)
            return self.node(node.inner)
        leaf = self.leaf(node, kind)
        if leaf is None:
            return False
        self.ops.append(pairscan.LEAF)
        self.args.append(leaf)
        return True

    def leaf(self, node: Any, kind: str) -> int | None:
        """The node as a program leaf (its index), or None for the kinds left to the
        per-node walk: static-segment and ``rfm.*`` membership, tags, aggregates over
        a period, and anything else not listed here."""
        prog, now = self.program, self.now
        if kind == "AgeAttr":
            at = _at_moment(node, now, _age_at)
            col = at.column
            return prog.add_interval(col.values, at.lo, at.hi, col.valid, at.negate)
        if kind == "NumericAttr":
            col = node.column
            return prog.add_interval(
                col.values, node.lo, node.hi, col.valid, node.negate
            )
        if kind == "CategoryAttr":
            mask = np.ascontiguousarray(node._mask(), dtype=np.uint8)
            return prog.add_codes(node.column.codes, mask, node.op == "is_null")
        if kind == "AggregateNode":
            return self._aggregate(node)
        if kind == "EventNode":
            return self._event(node)
        return None

    def _aggregate(self, node: Any) -> int | None:
        if node.period:
            return None
        prog, name, read = self.program, node.name, self._read
        agg = read(self.store, "aggregates")
        negate = node.op == "is_null"
        if name.startswith("days_since_"):
            from segd.live import LAST_SEEN

            lo, hi = _at_moment(node, self.now, _days_intervals)
            column = read(agg, LAST_SEEN[name])
            return prog.add_interval(column, lo, hi, None, negate)
        if name == "avg_order_value":
            return prog.add_ratio(
                read(agg, "revenue"),
                read(agg, "orders_count"),
                _f64(node.lo),
                _f64(node.hi),
                negate,
            )
        arr = read(agg, "orders_count" if name == "orders_count" else "revenue")
        return prog.add_interval(arr, node.lo, node.hi, None, negate)

    def _event(self, node: Any) -> int:
        prog = self.program
        types = {node.etype} | ({node.then[0]} if node.then is not None else set())
        self.reads_published = self.reads_published or bool(types & _PUBLISHED)
        links = _event_links(self.store, node)
        if links is None:
            # No row can match now; a later append (its log grows) rebuilds the
            # program: the log's size is checked like a gather's array.
            store, etype = self.store, node.etype

            def state() -> tuple:
                log = store.logs.get(etype)
                return (None,) if log is None else (id(log), log.n, log._version)

            self.checks.append((state, "==", state()))
            return prog.add_const(node.zero_qualifies)
        src, then, distinct = links
        a, b = _at_moment(node, self.now, _event_bounds)
        leaf = prog.add_event(
            src,
            int(a),
            int(b),
            node.count_min,
            node.count_max,
            sum_range=(node.sum_min, node.sum_max) if node.use_sum else None,
            distinct_codes=distinct,
            then=then,
            within_s=node.then[1] if node.then is not None else 0,
            zero_qualifies=node.zero_qualifies,
        )
        self.events.append((leaf, node, links))
        self.signatures.append((leaf, (node.key, int(a), int(b))))
        return leaf


class _Conjunction:
    """An AND node's operands without the node (``_Pairs._AndNode`` reads only them)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts


_PAIRS_KEY = ":pairs"


def _f64(values: Any) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)


def decide(
    store: Store,
    cand: BitMap,
    now: float,
    positives: list[Any],
    negatives: list[Any],
) -> BitMap:
    """The contacts of `cand` that match every node of `positives` and none of
    `negatives` at `now`: the rest of an AND decided per candidate (candidate-first
    plans, ``AndNode._few``). Merged contacts never match."""
    cids = np.asarray(cand.to_array(), dtype=np.uint32)
    return cids_to_bitmap(decide_cids(store, cids, now, positives, negatives))


def decide_cids(
    store: Store,
    cids: np.ndarray,
    now: float,
    positives: list[Any],
    negatives: list[Any],
) -> np.ndarray:
    """``decide`` over distinct uint32 `cids` (an AND answered by value indexes hands
    its candidates over as an array): those that match, in the order given. Event
    kernels walk the contact-major index faster with `cids` sorted."""
    if not len(cids):
        return cids
    merged = store.contacts.merged
    if merged:
        cids = cids[~_member(merged, cids)]
    nows = np.full(len(cids), float(now))
    pairs = _Pairs(store, cids, nows, np.arange(len(cids), dtype=np.intp), None)
    live = pairs.active
    for node, keep in _decide_order(store, float(now), positives, negatives):
        if not len(live):
            break
        got = pairs.run(node, live)
        live = live[got if keep else ~got]
    return np.ascontiguousarray(cids[live])


# _decide_order reuses the order kept on the first operand (False: sorted on every
# call; for A/B runs).
KEEP_DECIDE_ORDER = True


def _decide_order(
    store: Store, now: float, positives: list[Any], negatives: list[Any]
) -> list[tuple[Any, bool]]:
    """``decide_cids``' operands as (node, keep) pairs, cheapest per candidate first
    (``_decide_rank``). Kept on the first operand for the same operands, moment and
    store state: a plan reused for one moment (an Engine keeps it until the next
    write) asks the same order at every run, and ten ``_decide_rank`` calls were ~0.2
    ms of the reference at 10M. The key holds only nodes of the same plan (no store,
    nothing outliving it). The order changes the cost, never the answer."""
    ops = [(p, True) for p in positives] + [(p, False) for p in negatives]
    if not ops:
        return ops
    key = (tuple(positives), tuple(negatives), now, store_state(store))
    memo = ops[0][0].__dict__
    hit = memo.get("_decide_order")
    if KEEP_DECIDE_ORDER and hit is not None and hit[0] == key:
        return hit[1]
    got = sorted(ops, key=lambda nk: _decide_rank(nk[0], store, now))
    memo["_decide_order"] = (key, got)
    return got


def _member(bitmap: BitMap, cids: np.ndarray) -> np.ndarray:
    """``cids[i] in bitmap`` per element (cost ~ len(cids), not the bitmap's size)."""
    if not len(cids) or not bitmap:
        return np.zeros(len(cids), dtype=bool)
    inside = cids_to_bitmap(np.unique(cids)) & bitmap
    if not inside:
        return np.zeros(len(cids), dtype=bool)
    return np.isin(cids, np.asarray(inside.to_array(), dtype=np.uint32))


def _window(period: dict | None, nows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, a period's whole-second bounds [lo, hi) (``period_bounds_s`` per now)."""
    k = len(nows)
    top = MAX_EVENT_S + 1
    if not period:
        return np.zeros(k, np.int64), np.full(k, top, np.int64)
    if "last" in period:
        lo = nows - duration_s(period["last"], "$.last")
        hi = nows
    elif "ago" in period:
        older, newer = period["ago"]
        lo = nows - duration_s(older, "$.ago[0]")
        hi = nows - duration_s(newer, "$.ago[1]")
    else:
        a, b = period_bounds_s(period, 0.0, "$")
        return np.full(k, a, np.int64), np.full(k, b, np.int64)
    return (
        np.clip(np.ceil(lo), 0, top).astype(np.int64),
        np.clip(np.ceil(hi), 0, top).astype(np.int64),
    )


# Each log's unfiltered PairSource for its state (log.n, log._version, contacts).
_PLAIN_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# Each log's kernel view (columns, contact-major index, tail index sorted by contact),
# shared by every condition, segment and call until the log or its index changes.
_LOGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _pair_log(log: Any, n_contacts: int) -> Any:
    slots, rows, limit = log.contact_index(n_contacts)
    key = (limit, log.n, log._version, id(slots), id(rows))
    hit = _LOGS.get(log)
    if hit is None or hit[0] != key:
        old = None if hit is None else hit[0]
        if (
            hit is not None
            and old is not None
            and old[0] == limit
            and old[3:] == key[3:]
            and old[1] < log.n
            and old[2] + 1 == log._version
            and getattr(log, "_tail_appended", -1) == log._version
        ):
            # one append after the last rows since (no row moved): merge them
            # into the tail index instead of sorting the whole tail again
            tail_cids, tail_rows = grown_tail_index(
                hit[2], hit[3], log.cid, old[1], log.n
            )
        else:
            tail_cids, tail_rows = pairscan.tail_index(log.cid, limit, log.n)
        view = pairscan.PairLog(
            log.cid, log.ts, slots, rows, limit, tail_cids, tail_rows
        )
        hit = _LOGS[log] = (key, view, tail_cids, tail_rows)
    return hit[1]


def grown_tail_index(
    tail_cids: np.ndarray, tail_rows: np.ndarray, cid: Any, n0: int, n1: int
) -> tuple[np.ndarray, np.ndarray]:
    """``pairscan.tail_index(cid, limit, n1)`` from the one of ``[limit, n0)``
    (`tail_cids`, `tail_rows`): the rows ``[n0, n1)`` sorted alone and inserted after
    their contact's older rows — O(tail) copies instead of a sort of the whole
    tail, which grows with every append until the contact index is rebuilt."""
    new = np.asarray(cid[n0:n1])
    order = np.argsort(new, kind="stable")
    new_cids = new[order]
    new_rows = (order + n0).astype(np.uint32)
    at = np.searchsorted(tail_cids, new_cids, side="right")
    return (
        np.ascontiguousarray(np.insert(tail_cids, at, new_cids), dtype=np.uint32),
        np.ascontiguousarray(np.insert(tail_rows, at, new_rows), dtype=np.uint32),
    )


def _build_source(log: Any, filters: Any, n_contacts: int) -> Any:
    """`log` under `filters` as a ``pairscan.PairSource`` (None: no row can pass)."""
    pair_log = _pair_log(log, n_contacts)
    code_filters = []
    for dim, mask, codes in filters.code_filters:
        col = log.dim(dim)
        if col is None or not len(codes):
            return None
        # the contact-major copy (if the type keeps one) of the index pair_log holds
        code_filters.append((col, mask, log.contact_codes(dim)))
    code_filters.sort(key=lambda f: f[2] is None)  # by position first (prefetched)
    amount = log.amount
    if filters.amount_intervals and amount is None:
        return None
    return pairscan.PairSource(
        pair_log,
        code_filters=code_filters,
        amount=amount,
        amount_intervals=filters.amount_intervals,
    )


# Each condition's filtered PairSource for its log's state, as _PLAIN_SOURCES.
_FILTERED_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _shared_source(log: Any, filters: Any, n_contacts: int) -> Any:
    """``_Pairs._source`` across evaluations: the source of `log` under `filters`,
    kept per log state (plain) or per filters and log state (filtered), so fused
    programs re-link an event leaf only when its log changed."""
    plain = not (filters.code_filters or filters.amount_intervals)
    state: tuple
    if plain:  # shared with the per-node walk's sources
        cache, owner, state = _PLAIN_SOURCES, log, (log.n, log._version, n_contacts)
    else:
        cache, owner = _FILTERED_SOURCES, filters
        state = (id(log), log.n, log._version, n_contacts)
    kept = cache.get(owner)
    if kept is not None and kept[0] == state:
        return kept[1]
    src = _build_source(log, filters, n_contacts)
    cache[owner] = (state, src)
    return src


class _Pairs:
    """One evaluation: the pairs, and the plan walk over arrays of their indices."""

    def __init__(
        self,
        store: Store,
        cids: np.ndarray,
        nows: np.ndarray,
        active: np.ndarray,
        memo: dict | None,
    ) -> None:
        self.store = store
        self.cids = cids
        self.nows = nows
        self.active = active  # every pair that can match (merged contacts left out)
        # One moment for every pair (a write): time-dependent bounds are scalars.
        self.now = float(nows[0]) if nows.min() == nows.max() else None
        self.memo = memo
        self.n = store.n_contacts
        self._sources: dict[tuple, Any] = {}

    # -- the walk -------------------------------------------------------------------
    def run(self, node: Any, idx: np.ndarray) -> np.ndarray:
        """Whether each pair of `idx` (indices into the pairs) matches `node`."""
        if not len(idx):
            return np.zeros(0, dtype=bool)
        kind = type(node).__name__
        method = getattr(self, "_" + kind, None)
        if method is None:
            return self._fallback(node, idx)
        if self.memo is None or not _memoizable(node, kind):
            return method(node, idx)
        hit = self.memo.get(node.key)
        if hit is None:
            # Gathers are decided for every pair at once (each costs little more than
            # for a few); an event kernel only when asked for every pair anyway.
            if kind == "EventNode" and len(idx) != len(self.active):
                return method(node, idx)
            hit = np.zeros(len(self.cids), dtype=bool)
            hit[self.active] = method(node, self.active)
            self.memo[node.key] = hit
        return hit[idx]

    def _AndNode(self, node: Any, idx: np.ndarray) -> np.ndarray:
        out = np.ones(len(idx), dtype=bool)
        live = np.arange(len(idx))
        for part in sorted(node.parts, key=_rank):
            got = self.run(part, idx[live])
            live = live[got]
            if not len(live):
                out[:] = False
                return out
        out[:] = False
        out[live] = True
        return out

    def _OrNode(self, node: Any, idx: np.ndarray) -> np.ndarray:
        out = np.zeros(len(idx), dtype=bool)
        open_ = np.arange(len(idx))
        for part in sorted(node.parts, key=_rank):
            got = self.run(part, idx[open_])
            out[open_[got]] = True
            open_ = open_[~got]
            if not len(open_):
                break
        return out

    def _NotNode(self, node: Any, idx: np.ndarray) -> np.ndarray:
        return ~self.run(node.inner, idx)

    def _RefNode(self, node: Any, idx: np.ndarray) -> np.ndarray:
        return self.run(node.inner, idx)

    def _ConstNode(self, node: Any, idx: np.ndarray) -> np.ndarray:
        return _member(node.members, self.cids[idx])

    def _RfmValueNode(self, node: Any, idx: np.ndarray) -> np.ndarray:
        members = node.members(Context(self.store, float(self.nows[idx[0]])))
        return _member(members, self.cids[idx])

    def _fallback(self, node: Any, idx: np.ndarray) -> np.ndarray:
        """The reference for this sub-tree: one restricted run per distinct moment."""
        return evaluate_pairs_reference(
            node, self.store, self.cids[idx], self.nows[idx]
        )

    # -- attributes ---------------------------------------------------------------
    def _NumericAttr(self, node: Any, idx: np.ndarray) -> np.ndarray:
        return self._intervals(node, self.cids[idx], node.lo, node.hi)

    def _intervals(self, node: Any, cids: np.ndarray, lo, hi) -> np.ndarray:
        col = node.column
        present = pairscan.interval_pairs(
            col.values, _f64(lo), _f64(hi), cids, valid=col.valid
        ).view(bool)
        return ~present if node.negate else present

    def _AgeAttr(self, node: Any, idx: np.ndarray) -> np.ndarray:
        """Age in full years depends on the date of `now`: one interval set per day."""
        from segd.segments.conditions import AgeAttr

        if self.now is not None:
            at = _at_moment(node, self.now, _age_at)
            return self._intervals(at, self.cids[idx], at.lo, at.hi)
        days = np.floor(self.nows[idx] / DAY_S)
        out = np.empty(len(idx), dtype=bool)
        for day in np.unique(days).tolist():
            mine = np.flatnonzero(days == day)
            at = AgeAttr.__new__(AgeAttr)
            now = float(self.nows[idx[mine[0]]])
            AgeAttr.__init__(at, node.ast, node.key, node.column, now, "$")
            out[mine] = self._intervals(at, self.cids[idx[mine]], at.lo, at.hi)
        return out

    def _CategoryAttr(self, node: Any, idx: np.ndarray) -> np.ndarray:
        mask = np.ascontiguousarray(node._mask(), dtype=np.uint8)
        ok = pairscan.code_mask_pairs(node.column.codes, mask, self.cids[idx])
        ok = ok.view(bool)
        return ~ok if node.op == "is_null" else ok

    def _TagsAttr(self, node: Any, idx: np.ndarray) -> np.ndarray:
        col, cids = node.column, self.cids[idx]
        if node.op in ("is_null", "is_not_null"):
            present = col.valid[cids].astype(bool)
            return ~present if node.op == "is_null" else present
        hits = []
        for t in node.tags:
            code = col.dictionary.lookup_one(t)
            bm = col.tag_bitmaps[code] if 0 <= code < len(col.tag_bitmaps) else BitMap()
            hits.append(_member(bm, cids))
        if node.op == "contains_all":
            return np.logical_and.reduce(hits)
        return np.logical_or.reduce(hits)

    # -- aggregates -----------------------------------------------------------------
    def _AggregateNode(self, node: Any, idx: np.ndarray) -> np.ndarray:
        if node.period:
            return self._fallback(node, idx)
        agg, cids = self.store.aggregates, self.cids[idx]
        name = node.name
        if name.startswith("days_since_"):
            from segd.live import LAST_SEEN

            column = getattr(agg, LAST_SEEN[name])
            if self.now is not None:  # one moment: the condition's ts intervals
                lo, hi = _at_moment(node, self.now, _days_intervals)
                got = pairscan.interval_pairs(column, _f64(lo), _f64(hi), cids)
                got = got.view(bool)
                return ~got if node.op == "is_null" else got
            last = column[cids].astype(np.float64)
            nows = self.nows[idx]
            if node.op in ("is_null", "is_not_null"):
                got = last >= 1.0
            else:
                got = np.zeros(len(idx), dtype=bool)
                value = node.ast.get("value")
                for a, b in integer_range(node.op, value, f"{node.where}.value"):
                    upper = INF if a == -INF else np.floor(nows - a * DAY_S)
                    lower = (
                        1.0
                        if b == INF
                        else np.maximum(1.0, np.floor(nows - (b + 1) * DAY_S) + 1)
                    )
                    got |= (last >= lower) & (last <= upper)
        elif name == "avg_order_value":
            got = pairscan.ratio_pairs(
                agg.revenue, agg.orders_count, _f64(node.lo), _f64(node.hi), cids
            ).view(bool)
        else:
            arr = agg.orders_count if name == "orders_count" else agg.revenue
            got = pairscan.interval_pairs(arr, _f64(node.lo), _f64(node.hi), cids)
            got = got.view(bool)
        return ~got if node.op == "is_null" else got

    # -- events ---------------------------------------------------------------------
    def _source(self, log: Any, filters: Any) -> Any:
        """The kernel's view of `log` under `filters` (None: no row can pass). Without
        row filters the view is the log's own, kept for the log's state and shared
        by every condition (the segments of a live flush ask it many times)."""
        key = (id(log), id(filters))
        hit = self._sources.get(key)
        if hit is not None:
            return hit[0]
        if filters.code_filters or filters.amount_intervals:
            return self._new_source(log, filters)
        state = (log.n, log._version, self.n)
        kept = _PLAIN_SOURCES.get(log)
        if kept is not None and kept[0] == state:
            self._sources[key] = (kept[1],)
            return kept[1]
        got = self._new_source(log, filters)
        _PLAIN_SOURCES[log] = (state, got)
        return got

    def _new_source(self, log: Any, filters: Any) -> Any:
        src = _build_source(log, filters, self.n)
        self._sources[(id(log), id(filters))] = (src,)
        return src

    def _EventNode(self, node: Any, idx: np.ndarray) -> np.ndarray:
        store = self.store
        log = store.logs.get(node.etype)
        src = None if log is None or log.n == 0 else self._source(log, node.filters)
        if src is None:
            return np.full(len(idx), node.zero_qualifies, dtype=bool)
        last = _last_seen(store, node)
        if last is not None and self.now is not None:
            a, b = _at_moment(node, self.now, _event_bounds)
            if a >= 1:
                # "At least one event in [a, b)" by the contact's latest event: before
                # a, none; in [a, b), one; at or after b, the kernel decides.
                seen = last[self.cids[idx]]
                got = (seen >= a) & (seen < b)
                later = np.flatnonzero(seen >= b)
                if len(later):
                    got[later] = self._event_kernel(node, log, src, idx[later])
                return got
        return self._event_kernel(node, log, src, idx)

    def _event_kernel(
        self, node: Any, log: Any, src: Any, idx: np.ndarray
    ) -> np.ndarray:
        store = self.store
        assert log is not None  # a source exists only for a non-empty log
        then, within = None, 0
        if node.then is not None:
            etype, within, then_filters = node.then
            then_log = store.logs.get(etype)
            if then_log is not None and then_log.n:
                then = self._source(then_log, then_filters)
        distinct = None
        if node.distinct_dim is not None:
            distinct = log.dim(node.distinct_dim)
        if self.now is not None:
            a, b = _at_moment(node, self.now, _event_bounds)
            lo, hi = np.full(len(idx), a, np.int64), np.full(len(idx), b, np.int64)
        else:
            lo, hi = _window(node.ast.get("period"), self.nows[idx])
        verdict = pairscan.event_pairs(
            src,
            np.ascontiguousarray(self.cids[idx]),
            lo,
            hi,
            node.count_min,
            node.count_max,
            sum_range=(node.sum_min, node.sum_max) if node.use_sum else None,
            distinct_codes=distinct,
            then=then,
            within_s=within,
        )
        got = verdict == pairscan.QUALIFIES
        if node.zero_qualifies:
            got |= verdict == pairscan.NO_EVENTS
        return got


# Event types whose latest time per contact the rollups keep (segd.aggregates).
_LAST_SEEN_OF = {"order": "last_order_s", "email_open": "last_email_open_s"}


def _last_seen(store: Store, node: Any) -> np.ndarray | None:
    """The rollup of each contact's latest event of `node`'s type (0: none) when that
    alone decides the node: at least one event of the type, unfiltered; else None."""
    name = _LAST_SEEN_OF.get(node.etype)
    if name is None or not node._plain or node.count_min != 1:
        return None
    if node.count_max != 2**64 - 1 or node.distinct_dim is not None:
        return None
    return getattr(store.aggregates, name)


def _at_moment(node: Any, now: float, make: Any) -> Any:
    """``make(node, now)``, kept on the node for its last moment: a live flush asks
    the same condition at one clock value for every segment and record."""
    hit = node.__dict__.get("_pairs_at")
    if hit is not None and hit[0] == now and hit[1] is make:
        return hit[2]
    got = make(node, now)
    node.__dict__["_pairs_at"] = (now, make, got)
    return got


def _age_at(node: Any, now: float) -> Any:
    """A copy of an ``AgeAttr`` bound to `now` (the node itself is left as is)."""
    from segd.segments.conditions import AgeAttr

    at = AgeAttr.__new__(AgeAttr)
    AgeAttr.__init__(at, node.ast, node.key, node.column, now, "$")
    return at


def _event_bounds(node: Any, now: float) -> tuple[int, int]:
    """An event condition's window ``[lo, hi)`` in whole seconds at `now`."""
    return period_bounds_s(node.ast.get("period"), now, "$")


def _days_intervals(node: Any, now: float) -> tuple[np.ndarray, np.ndarray]:
    """A ``days_since_*`` condition's last-seen intervals at `now` (float64)."""
    at = copy.copy(node)
    at.__dict__.pop("_pairs_at", None)
    at.now_s = now
    lo, hi = at._days_to_ts_intervals()
    return _f64(lo), _f64(hi)


def _memoizable(node: Any, kind: str) -> bool:
    """Conditions whose result a live flush cannot change between segments: all but
    events of the types it publishes (``segment_entered`` / ``_exited``)."""
    if kind == "EventNode":
        types = {node.etype} | ({node.then[0]} if node.then is not None else set())
        return not (types & _PUBLISHED)
    return kind in _CHEAP


_PUBLISHED = frozenset(SEGMENT_EVENT_TYPES)
_CHEAP = {
    "ConstNode": 0,
    "RfmValueNode": 0,
    "CategoryAttr": 1,
    "NumericAttr": 1,
    "AgeAttr": 1,
    "TagsAttr": 1,
    "AggregateNode": 2,
    "EventNode": 4,
}


def _decide_rank(node: Any, store: Store, now: float) -> tuple[int, float]:
    """Operand order of ``decide``, cheapest per candidate first (a stable sort keeps
    the AND's own order among equals): gathers; event conditions the rollup of a
    contact's latest event decides (``_last_seen``: a gather too, e.g. ``not
    email_open() in last 14 days``, which removes most candidates at the cost of a
    column read); then event kernels and sub-expressions of them by their expected
    work per candidate (`_kernel_cost`), so the "then no" walk and an OR of two
    60-day windows see only the candidates the cheaper conditions left."""
    rank = _rank(node)
    if rank < _CHEAP["EventNode"]:
        return rank, 0.0
    inner = node.inner if type(node).__name__ in ("NotNode", "RefNode") else node
    if type(inner).__name__ == "EventNode" and _last_seen(store, inner) is not None:
        return _CHEAP["AggregateNode"], 1.0  # after the rollup gathers
    cost = _kernel_cost(inner, store, now)
    if cost is not None:
        return _CHEAP["EventNode"], cost
    return rank, 0.0


def _kernel_cost(node: Any, store: Store, now: float) -> float | None:
    """Expected cost per candidate of deciding `node` by pair kernels, in units of
    one contact-slot lookup (a few cache misses): a slot per event log read, plus
    the log's average rows per contact inside the window, each followed by a "then
    no" look-up (a slot of its own) when there is one. None for a node that is not
    an event condition or an AND / OR / NOT of them and of gathers."""
    name = type(node).__name__
    if name in ("NotNode", "RefNode"):
        return _kernel_cost(node.inner, store, now)
    if name in ("AndNode", "OrNode"):
        total = 0.0
        for part in node.parts:
            got = _kernel_cost(part, store, now)
            if got is None:
                return None
            total += got
        return total
    if name != "EventNode":
        return 0.1 if name in _CHEAP else None  # a gather
    log = store.logs.get(node.etype)
    if log is None or not log.n or not store.n_contacts:
        return 0.1
    # kept on the node for its log's state and moment (plans are reused per moment)
    state = (now, id(log), log.n, log._version, store.n_contacts)
    hit = node.__dict__.get("_pairs_rows")
    if hit is not None and hit[0] == state:
        per_contact = hit[1]
    else:
        a, b = _event_bounds(node, now)
        r0, r1 = log.window(a, b)
        per_contact = (r1 - r0) / store.n_contacts
        node.__dict__["_pairs_rows"] = (state, per_contact)
    if node.then is not None:
        return 2.0 + 3.0 * per_contact
    return 1.0 + per_contact


def _rank(node: Any) -> int:
    """Operand order of AND / OR over pairs: gathers before event kernels before
    sub-expressions and fallbacks (a stable sort keeps the query's order otherwise)."""
    name = type(node).__name__
    if name in ("NotNode", "RefNode"):
        return _rank(node.inner)
    return _CHEAP.get(name, 6)
