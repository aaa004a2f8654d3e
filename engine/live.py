"""Live segments: the engine clock and dynamic segments kept exact at every clock value.

The clock (``Engine.advance``) is a real number of epoch seconds, unset until the first
advance. Every dynamic segment's members are kept equal to ``Engine.segment(query,
now=clock)``:

- **writes**: ``Engine._touched(cids, cause)`` queues the contacts a record changed; at the
  end of the record only the segments whose conditions the cause can affect are
  re-evaluated, and only for those contacts (``plan.run(ctx, cand=touched)``). Contacts
  new to the engine are re-evaluated in every segment ("did not happen" matches them).
  Catalog upserts re-evaluate the segments with catalog filters in full, RFM
  computations those with ``rfm.*`` conditions (the documented fallbacks).
- **time**: membership is piecewise constant between whole seconds. A window edge
  (``in last 7 days``: an event at t is in the window for now in (t, t + 7 d]) changes
  the value *just after* a whole second T, a ``days_since_*`` threshold or a birthday
  (``age``) changes it *at* T. ``advance(t0 -> t1)`` asks each time-dependent condition
  for its candidate (contact, moment) pairs inside (t0, t1] — the event logs are sorted
  by time, so the window edges are two binary searches; thresholds come from the last-seen
  arrays (sorted once, repaired after touches); birthdays from the birth dates — and
  decides all of a segment's pairs with one ``evaluate_pairs`` call, a contact's last
  moment at t1 itself (nothing else can change it in the step). Per contact in time
  order, a moment whose value differs from the one before is a change; its ``at`` is the
  whole second T of its edge. No Python runs per contact or per pair.
  ``rfm.entered ... in last N days`` (a relative period over RFM transitions) cannot be
  scheduled: such segments are re-evaluated in full at the end of each step.

Changes are kept in an append-only log (``segment_changes``; a change's position is its
row number, which the gRPC ``Changes`` stream resumes from); daily counts are derived from
it. The state goes into snapshots (``to_bytes``) and the clock moves through the log
(``mutations.ClockAdvanced``), so replay reproduces members and changes alike.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack
import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from segd.aggregates import VISIT_EVENTS
from segd.columns import NumericColumn, sorted_unique
from segd.errors import FailedPrecondition, InvalidInput, InvalidQuery, SegmentNotFound
from segd.ingest import TypeRows, append_rows
from segd.livestatic import StaticPass, split
from segd.native.bitset import cids_to_bitmap
from segd.native.idmap import IdMap
from segd.predicates import integer_range
from segd.segments.context import Context
from segd.segments.pairs import (
    _fused,
    evaluate_conjunction,
    evaluate_pairs,
    run_fused,
)
from segd.segments.registry import SEGMENT_EVENT_TYPES
from segd.timeutil import DAY_S, MAX_EVENT_S, duration_s

if TYPE_CHECKING:
    from segd.core import Engine

ENTERED, EXITED = 1, -1
# Up to this share of the base, touched contacts are re-decided by evaluate_pairs (cost ~
# the contacts); beyond it by a restricted plan run (bitmaps per operand, cost ~ the
# base). Measured at 1M with 100 segments: 10k contacts 10.1k events/s by pairs vs 6.8k
# by plan runs; 100k contacts 23.3k vs 38.9k.
PAIRS_SHARE = 0.04
PAIRS_MIN = 4096  # small engines always by pairs
# A flush runs the fused programs of its segments in one pass (``_Job``); False: one
# call per segment, in turn (the oracle of the one-pass path in the tests).
ONE_PASS = True
# Touched contacts up to this share of the base go through the one pass (its
# [contact, segment] tables cost ~ 200 bytes per contact); beyond, as below.
ONE_PASS_SHARE = 0.25
ONE_PASS_BLOCK = 65_536  # contacts per run_fused call of a pass (bounds its tables)
MAX_ROUNDS = 1000  # segment events touching segments: bounded by the reference depth
CHANGE_NAMES = {ENTERED: "entered", EXITED: "exited"}
# Causes that are not event types.
UPSERT, ITEMS, MERGE, TIME, DEFINITION, RFM = (
    "upsert",
    "items",
    "merge",
    "time",
    "definition",
    "rfm",
)
AGGREGATE_TYPES = {
    "orders_count": ("order",),
    "revenue": ("order",),
    "avg_order_value": ("order",),
    "days_since_last_order": ("order",),
    "days_since_last_email_open": ("email_open",),
}
LAST_SEEN = {
    "days_since_last_order": "last_order_s",
    "days_since_last_visit": "last_visit_s",
    "days_since_last_email_open": "last_email_open_s",
}


def expanded(ast: dict, lookup) -> Iterator[dict]:
    """Every condition node of `ast` with references to dynamic segments expanded."""
    stack = [ast]
    while stack:
        node = stack.pop()
        if "and" in node or "or" in node:
            stack.extend(node.get("and") or node.get("or") or [])
        elif "not" in node:
            stack.append(node["not"])
        elif "segment" in node:
            sub, members = lookup(node["segment"])
            if members is None:
                stack.append(sub)
        else:
            yield node


def _relative(period: dict | None) -> tuple[int, int] | None:
    """(older, newer) offsets in seconds of a relative period; None for absolute / none."""
    if not period:
        return None
    if "last" in period:
        return duration_s(period["last"], "period.last"), 0
    if "ago" in period:
        return duration_s(period["ago"][0], "period.ago"), duration_s(
            period["ago"][1], "period.ago"
        )
    return None


def _thresholds(op: str, value: Any) -> list[int]:
    """Whole days k at which ``days_since op value`` can change (d reaching k)."""
    if op in ("is_null", "is_not_null"):
        return []
    out = set()
    for a, b in integer_range(op, value, "value"):
        if a != -math.inf:
            out.add(int(a))
        if b != math.inf:
            out.add(int(b) + 1)
    return sorted(k for k in out if k >= 0)


class Profile:
    """What can change one dynamic segment: event types, attributes, time, catalog, RFM."""

    def __init__(self, ast: dict, lookup, visit_events: frozenset, catalog) -> None:
        self.types: set[str] = set()
        self.attrs = False
        self.catalog = False
        self.rfm = False
        self.rfm_timed = False
        # (log types, older, newer): window edges of relative periods
        self.windows: list[tuple[tuple[str, ...], int, int]] = []
        # (log types or None for all-time array name, thresholds, period or None)
        self.days: list[tuple[tuple[str, ...], list[int], str | None]] = []
        self.age = False
        self.instants: list[tuple[str, ...]] = []
        for node in expanded(ast, lookup):
            if "attr" in node:
                self.attrs = True
                if node["attr"] == "age" and node["op"] not in (
                    "is_null",
                    "is_not_null",
                ):
                    self.age = True
            elif "event" in node:
                self.types.add(node["event"])
                fields = [f["field"] for f in node.get("where", [])]
                then = node.get("then_no")
                if then is not None:
                    self.types.add(then["event"])
                    fields += [f["field"] for f in then.get("where", [])]
                if any(catalog.has_field(f) for f in fields):
                    self.catalog = True
                rel = _relative(node.get("period"))
                if rel is not None:
                    self.windows.append(((node["event"],), *rel))
                elif node["event"] in SEGMENT_EVENT_TYPES:
                    # published during a step at their own second: counted from it
                    self.instants.append((node["event"],))
            elif "aggregate" in node:
                name = node["aggregate"]
                types = (
                    tuple(sorted(visit_events))
                    if name == "days_since_last_visit"
                    else AGGREGATE_TYPES[name]
                )
                self.types.update(types)
                rel = _relative(node.get("period"))
                if rel is not None:
                    self.windows.append((types, *rel))
                if name.startswith("days_since_"):
                    ks = _thresholds(node["op"], node.get("value"))
                    if ks:
                        self.days.append(
                            (types, ks, None if rel is not None else LAST_SEEN[name])
                        )
            elif "rfm" in node:
                self.rfm = True
                if _relative(node.get("period")) is not None:
                    self.rfm_timed = True

    def affected_by(self, cause: str) -> bool:
        if cause in (MERGE, DEFINITION):
            return True
        if cause == UPSERT:
            return self.attrs
        return cause in self.types


class ChangeLog:
    """Append-only columns: segment, contact, entered / exited, at, cause."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.causes: list[str] = []
        self._name_ix: dict[str, int] = {}
        self._cause_ix: dict[str, int] = {}
        self._chunks: list[tuple[np.ndarray, ...]] = []
        self._cols: tuple[np.ndarray, ...] | None = self._empty()
        self.n = 0

    @staticmethod
    def _empty() -> tuple[np.ndarray, ...]:
        return (
            np.zeros(0, np.int32),
            np.zeros(0, np.uint32),
            np.zeros(0, np.int8),
            np.zeros(0, np.float64),
            np.zeros(0, np.int16),
        )

    def code(self, table: list[str], index: dict[str, int], value: str) -> int:
        ix = index.get(value)
        if ix is None:
            ix = index[value] = len(table)
            table.append(value)
        return ix

    def append(
        self,
        segment: str,
        cids: np.ndarray,
        change: np.ndarray,
        at: np.ndarray,
        causes: list[str] | np.ndarray,
    ) -> None:
        n = len(cids)
        if not n:
            return
        seg = np.full(n, self.code(self.names, self._name_ix, segment), np.int32)
        if isinstance(causes, list):
            cause = np.array(
                [self.code(self.causes, self._cause_ix, c) for c in causes], np.int16
            )
        else:
            cause = causes.astype(np.int16)
        self._chunks.append(
            (
                seg,
                np.asarray(cids, np.uint32),
                np.asarray(change, np.int8),
                np.asarray(at, np.float64),
                cause,
            )
        )
        self._cols = None
        self.n += n

    def cause_code(self, cause: str) -> int:
        return self.code(self.causes, self._cause_ix, cause)

    def name_code(self, segment: str) -> int:
        return self.code(self.names, self._name_ix, segment)

    def append_coded(
        self,
        segments: np.ndarray,
        cids: np.ndarray,
        change: np.ndarray,
        at: np.ndarray,
        causes: np.ndarray,
    ) -> None:
        """Append rows of several segments at once (codes from ``name_code`` /
        ``cause_code``), e.g. a time step's changes in time order."""
        if not len(cids):
            return
        self._chunks.append(
            (
                np.asarray(segments, np.int32),
                np.asarray(cids, np.uint32),
                np.asarray(change, np.int8),
                np.asarray(at, np.float64),
                np.asarray(causes, np.int16),
            )
        )
        self._cols = None
        self.n += len(cids)

    def columns(self) -> tuple[np.ndarray, ...]:
        if self._cols is None:
            base = [] if self._base is None else [self._base]
            parts = base + self._chunks
            self._cols = tuple(np.concatenate([p[i] for p in parts]) for i in range(5))
            self._base = self._cols
            self._chunks = []
        return self._cols

    _base: tuple[np.ndarray, ...] | None = None

    def to_state(self) -> dict:
        cols = self.columns()
        return {
            "names": self.names,
            "causes": self.causes,
            "cols": [c.tobytes() for c in cols],
        }

    @classmethod
    def from_state(cls, state: dict) -> ChangeLog:
        log = cls()
        log.names = list(state["names"])
        log.causes = list(state["causes"])
        log._name_ix = {n: i for i, n in enumerate(log.names)}
        log._cause_ix = {c: i for i, c in enumerate(log.causes)}
        dtypes = (np.int32, np.uint32, np.int8, np.float64, np.int16)
        cols = tuple(
            np.frombuffer(b, dtype=d).copy()
            for b, d in zip(state["cols"], dtypes, strict=True)
        )
        log._base = cols
        log._cols = cols
        log.n = len(cols[0])
        return log


class LiveSegments:
    """The clock, dynamic memberships and their change log of one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.clock: float | None = None
        self.members: dict[str, BitMap] = {}
        self.changes = ChangeLog()
        self._pending: list[tuple[np.ndarray, str]] = []
        self._profiles: dict[str, Profile] | None = None
        self._n_seen = 0
        self._plans: dict[str, tuple] = {}  # name -> (fingerprint, plan, its now)
        self._gen = 0  # bumped by every touch (see _sorted)
        self._orders: dict[str, _Order] = {}  # what -> sorted keys (see _sorted)
        self._step_orders: dict[Any, tuple] | None = None  # within one advance step
        self._sample_cids: np.ndarray | None = None
        self._sample_n = -1
        self._static = StaticPass()  # per segment, who passes its attribute conjuncts
        # within a flush round: the plans' fingerprint (reset when it publishes)
        self._flushing = False
        self._flush_key: tuple | None = None
        # within a pass's records: the segment events held (``_publishing``)
        self._held: list | None = None
        # causes of a flush's touches -> per segment, which of them can affect it
        self._signatures: dict[tuple, dict[str, tuple[bool, ...]]] = {}
        self.grown = threading.Condition()  # notified when the change log grows
        # notified after every clock step; stepped_at: when the last one happened
        # (time.monotonic), so readers can tell a clock someone drives every second
        # (the server's, segd.server.live_clock) from one that was set once
        self.stepped = threading.Condition()
        self.stepped_at: float | None = None

    # -- state ----------------------------------------------------------------------
    @property
    def tracking(self) -> bool:
        """True once the clock is set and some dynamic segment exists."""
        return self.clock is not None and bool(self.members)

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {
                "clock": self.clock,
                "members": {k: v.serialize() for k, v in self.members.items()},
                "changes": self.changes.to_state(),
                "n_seen": self._n_seen,
            },
            use_bin_type=True,
        )

    @classmethod
    def from_bytes(cls, engine: Engine, data: bytes) -> LiveSegments:
        state = msgpack.unpackb(data, raw=False, strict_map_key=False)
        live = cls(engine)
        live.clock = state["clock"]
        live.members = {k: BitMap.deserialize(v) for k, v in state["members"].items()}
        live.changes = ChangeLog.from_state(state["changes"])
        live._n_seen = int(state["n_seen"])
        return live

    def _dynamic(self) -> list[str]:
        return [s.name for s in self.engine.segments.list() if not s.static]

    def profiles(self) -> dict[str, Profile]:
        if self._profiles is None:
            eng = self.engine
            lookup = eng.segments.lookup
            visits = frozenset(eng.store.aggregates.visit_events or VISIT_EVENTS)
            self._profiles = {
                s.name: Profile(s.ast, lookup, visits, eng.store.catalog)
                for s in eng.segments.list()
                if not s.static
            }
        return self._profiles

    # -- evaluation -----------------------------------------------------------------
    def _fingerprint(self) -> tuple:
        """What compiled plans depend on besides `now`: the catalog, the dictionaries,
        the contact columns, the saved segments and the RFM computation. Kept for
        the length of a flush round (``_flush_key``) until it publishes."""
        if self._flush_key is not None:
            return self._flush_key
        store = self.engine.store
        key = (
            store.catalog.version,
            len(store.catalog),
            tuple((k, len(m)) for k, m in store.dim_maps.items()),
            tuple((k, id(c)) for k, c in store.contacts.columns.items()),
            id(store),
            id(self.engine.segments),
            id(self.engine.rfm_state.latest),
        )
        if self._flushing:
            self._flush_key = key
        return key

    def _plan(self, name: str, now: float) -> Any:
        """The segment's plan at `now`: compiled once per data shape, then moved to
        each new `now` (``rebind``) — compiling costs far more than a small run."""
        key = self._fingerprint()
        hit = self._plans.get(name)
        if hit is None or hit[0] != key:
            plan = self.engine._compiler(now).compile({"segment": name})
            _keep_order(plan)
            self._plans[name] = (key, plan, now)
            return plan
        _, plan, at = hit
        if at != now:
            rebind(plan, now)
            self._plans[name] = (key, plan, now)
        return plan

    def _pairs_plan(self, name: str, now: float) -> Any:
        """The segment's plan for ``evaluate_pairs``, which reads each pair's own moment
        and leaves the plan bound to any: not re-bound here, and marked unbound (the
        next ``_plan`` re-binds it)."""
        key = self._fingerprint()
        hit = self._plans.get(name)
        plan = self._plan(name, now) if hit is None or hit[0] != key else hit[1]
        self._plans[name] = (key, plan, math.nan)
        return plan

    def _evaluate(
        self,
        name: str,
        now: float,
        cand: BitMap | None,
        shared: dict | None = None,
        jobs: list[_Job] | None = None,
    ) -> BitMap | None:
        """Members of `name` at `now`: in full (`cand` None, as ``Engine.segment``), or
        for the contacts of `cand` by ``evaluate_pairs`` (cost ~ the candidates, not the
        base: what a write or a time step re-decides; a restricted plan run when they
        are more than ``PAIRS_SHARE`` of a large base). Candidates that fail the
        segment's attribute conjuncts (its static pass, ``segd.livestatic``) are
        dropped first; the rest of its top AND decides the others. `shared`: kept by
        the calls of one flush over the same `cand` (its cids, their static-pass rows,
        the memo of ``evaluate_pairs``). `jobs`: when given, a segment whose rest is one
        fused program that reads no published segment event is queued there for the
        flush's one pass (``_run_jobs``) and None returned."""
        eng = self.engine
        if cand is None:  # a full evaluation: as Engine.segment does it
            plan = eng._compiler(now).compile({"segment": name})
            return plan.run(Context(eng.store, now, None), cand)
        if not cand:
            return BitMap()
        plan = self._plan(name, now)
        if shared is None:
            shared = {}
        parts = split(plan)
        n = eng.store.n_contacts
        one_pass = max(PAIRS_MIN, ONE_PASS_SHARE * n)
        if jobs is not None and parts is not None and len(cand) <= one_pass:
            fused = _fused(plan, parts[1], eng.store, now)
            if fused is not None and not fused.reads_published:
                if "cids" not in shared:
                    shared["cids"] = np.asarray(cand.to_array(), np.uint32)
                slot = self._static.slot(name, parts[0], eng.store)
                jobs.append(_Job(name, fused, shared, slot))
                return None
        # Queued segments record first (the order of a flush segment by segment):
        # this one may read the events they publish.
        self._run_jobs(jobs)
        if len(cand) > max(PAIRS_MIN, PAIRS_SHARE * n):
            # bitmaps per operand beat per-contact kernels
            ctx = Context(eng.store, now, None, _sample=self._sample())
            return plan.run(ctx, cand)
        cids = shared.get("cids")
        if cids is None:
            cids = shared["cids"] = np.asarray(cand.to_array(), np.uint32)
        if parts is None:
            nows = np.full(len(cids), now)
            memo = shared.setdefault("memo", {})
            got = evaluate_pairs(plan, eng.store, cids, nows, memo=memo)
        else:
            static, rest = parts
            ok = self._static_pass(name, static, cids, shared)
            cids = cids[ok]
            nows = np.full(len(cids), now)
            got = evaluate_conjunction(rest, eng.store, cids, nows, holder=plan)
        if _rebinds(plan):  # a fallback sub-tree moved its moment: re-bind on next use
            key, plan, _ = self._plans[name]
            self._plans[name] = (key, plan, math.nan)
        return cids_to_bitmap(np.ascontiguousarray(cids[got]))

    def _static_pass(
        self, name: str, static: list, cids: np.ndarray, shared: dict
    ) -> np.ndarray:
        """Whether each of `cids` passes segment `name`'s attribute conjuncts
        `static`; the contacts' bit rows are gathered once per `shared` (for every
        segment of a flush) while no bits change."""
        index = self._static.slot(name, static, self.engine.store)
        bits = shared.get("bits")
        if bits is None or bits[0] != self._static.version:
            bits = (self._static.version, self._static.columns(cids))
            shared["bits"] = bits
        return self._static.passing(bits[1], index)

    def _sample(self) -> np.ndarray:
        n = self.engine.store.n_contacts
        if self._sample_cids is None or self._sample_n != n:
            self._sample_cids = Context(self.engine.store, 0.0).sample_cids()
            self._sample_n = n
        return self._sample_cids

    def _record(
        self, name: str, before: BitMap, after: BitMap, at: float, cause: str
    ) -> None:
        """Record the difference of `before` -> `after` (restricted sets) at `at`."""
        entered = after - before
        exited = before - after
        if not entered and not exited:
            return
        members = self.members[name]
        members.update(entered)
        members.difference_update(exited)
        cids = np.concatenate(
            [
                np.asarray(entered.to_array(), np.uint32),
                np.asarray(exited.to_array(), np.uint32),
            ]
        )
        change = np.concatenate(
            [
                np.full(len(entered), ENTERED, np.int8),
                np.full(len(exited), EXITED, np.int8),
            ]
        )
        code = self.changes.cause_code(cause)
        ats = np.full(len(cids), at)
        self.changes.append(name, cids, change, ats, np.full(len(cids), code, np.int16))
        self._publish(name, cids, change, ats)
        if self._held is None:
            self._notify()

    @contextmanager
    def _publishing(self) -> Iterator[None]:
        """Within: the segment events of the records are held, then appended and
        notified once per type (the rows in the same order as one append per
        record: one flush's pass records many segments, each a few changes)."""
        assert self._held is None
        held: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        self._held = held
        try:
            yield
        finally:  # what was recorded is published, even when a record failed
            self._held = None
            if held:
                code = np.concatenate(
                    [np.full(len(c), k, np.uint32) for k, c, _, _ in held]
                )
                cids = np.concatenate([c for _, c, _, _ in held])
                change = np.concatenate([x for _, _, x, _ in held])
                ts = np.concatenate([t for _, _, _, t in held])
                self._append_segment_events(cids, change, ts, code)
                self._notify()

    def _publish(
        self, name: str, cids: np.ndarray, change: np.ndarray, at: np.ndarray
    ) -> None:
        """Append the changes as ``segment_entered`` / ``segment_exited`` events (at the
        whole second of `at`, property ``segment`` = name), so the segment language and
        triggers can ask them; their touches re-evaluate the segments that do."""
        store = self.engine.store
        names = store.dim_maps.setdefault("segment", IdMap())
        code = names.get_or_add_one(name)
        self._flush_key = None  # the dictionaries grew: plans may be stale
        ts = np.clip(np.floor(at), 1, MAX_EVENT_S).astype(np.uint32)
        if self._held is not None:
            self._held.append((code, cids, change, ts))
            return
        self._append_segment_events(
            cids, change, ts, np.full(len(cids), code, np.uint32)
        )

    def _append_segment_events(
        self, cids: np.ndarray, change: np.ndarray, ts: np.ndarray, codes: np.ndarray
    ) -> None:
        store = self.engine.store
        for kind, etype in ((ENTERED, "segment_entered"), (EXITED, "segment_exited")):
            mine = change == kind
            if not mine.any():
                continue
            rows = TypeRows(
                np.ascontiguousarray(cids[mine], np.uint32),
                np.ascontiguousarray(ts[mine]),
                {"segment": np.ascontiguousarray(codes[mine], np.uint32)},
                None,
            )
            append_rows(store, etype, rows)
            self.engine._touched(rows.cids, etype)

    def _notify(self) -> None:
        with self.grown:
            self.grown.notify_all()

    def _refresh(self, name: str, cand: BitMap | None, cause: str) -> None:
        """Re-evaluate `name` at the clock for `cand` (None: everyone)."""
        assert self.clock is not None
        after = self._evaluate(name, self.clock, cand)
        assert after is not None  # (queued only when given a queue)
        if cand is None:  # a full evaluation: its static pass is due now, not mid-write
            parts = split(self._plan(name, self.clock))
            if parts is not None:
                self._static.slot(name, parts[0], self.engine.store)
        current = self.members[name]
        before = current.copy() if cand is None else current & cand
        self._record(name, before, after, self.clock, cause)

    # -- hooks from the engine ---------------------------------------------------------
    def touched(self, cids: np.ndarray, cause: str) -> None:
        self._gen += 1  # per-contact data changed: cached orders are stale
        if cause in (UPSERT, MERGE):
            self._static.touched(cids)
        if self.clock is not None:
            self._pending.append((cids, cause))

    def flush(self) -> None:
        """End of a record: re-evaluate what the queued touches can have changed (again
        while the segment events this publishes touch segments that ask them)."""
        for _ in range(MAX_ROUNDS):
            self._flush_once()
            if not self._pending:
                return
        raise RuntimeError(
            "live segments: segment events did not settle"
        )  # pragma: no cover

    def _flush_once(self) -> None:
        if not self._pending:
            self._n_seen = self.engine.store.n_contacts
            return
        pending, self._pending = self._pending, []
        if not self.members:
            self._n_seen = self.engine.store.n_contacts
            return
        profiles = self.profiles()
        seen = self._n_seen
        self._flush_key = None
        self._flushing = True
        try:
            self._flush_round(pending, profiles, seen)
        finally:
            self._flushing = False
            self._flush_key = None

    def _flush_round(
        self, pending: list[tuple[np.ndarray, str]], profiles: dict, seen: int
    ) -> None:
        fresh = BitMap()
        fresh_cause = None
        parts: list[tuple[BitMap, str]] = []
        for cids, cause in pending:
            arr = np.asarray(cids, np.uint32)
            new = arr[arr >= seen]
            if len(new):
                fresh |= _bitmap(new)
                fresh_cause = fresh_cause or cause
            parts.append((_bitmap(arr[arr < seen]), cause))
        assert self.clock is not None
        # Segments affected by the same causes re-decide the same contacts: their
        # chunks are built once, and they share the contacts' arrays and memo.
        groups: dict[tuple[bool, ...], tuple[list, BitMap, dict]] = {}
        jobs: list[_Job] = []
        causes = tuple(cause for _, cause in parts)
        # per segment, which of the causes can affect it; kept per list of causes
        # (a flush's rounds alternate between a few), reset with the profiles
        if len(self._signatures) > 16:
            self._signatures.clear()
        signatures = self._signatures.setdefault(causes, {})
        for name in sorted(self.members):
            signature = signatures.get(name)
            if signature is None:
                profile = profiles[name]
                signature = signatures[name] = tuple(
                    profile.affected_by(cause) for cause in causes
                )
            group = groups.get(signature)
            if group is None:
                # Each contact once, under the first cause that can affect the
                # segment (new contacts last): one evaluation for all of them, then
                # the changes recorded per cause in that order.
                done = BitMap()
                chunks: list[tuple[BitMap, str]] = []
                for (old, cause), affects in zip(parts, signature, strict=True):
                    if old and affects:
                        todo = old - done
                        if todo:
                            chunks.append((todo, cause))
                            done |= todo
                if fresh:
                    chunks.append((fresh, fresh_cause or UPSERT))
                group = groups[signature] = (chunks, done | fresh, {})
            chunks, cand, shared = group
            if not chunks:
                continue
            shared.setdefault("chunks", (chunks, cand))
            after = self._evaluate(
                name, self.clock, cand, shared, jobs if ONE_PASS else None
            )
            if after is None:  # queued: decided in one pass with the others
                continue
            self._settle(name, chunks, cand, after)
        self._run_jobs(jobs)
        self._n_seen = self.engine.store.n_contacts

    def _settle(
        self, name: str, chunks: list[tuple[BitMap, str]], cand: BitMap, after: BitMap
    ) -> None:
        """Record segment `name`'s changes over `cand` (now `after`), per cause."""
        before = self.members[name] & cand
        if before == after:  # the common case: nothing to record per cause
            return
        assert self.clock is not None
        for todo, cause in chunks:
            self._record(name, before & todo, after & todo, self.clock, cause)

    def _run_jobs(self, jobs: list[_Job] | None) -> None:
        """Decide the queued segments in one ``run_fused`` pass over the union of
        their groups' contacts, then record each in queue order; empties `jobs`."""
        if not jobs:
            return
        queued = list(jobs)
        jobs.clear()
        for job in queued:  # slots stay put while a flush queues (no column changes)
            assert self._static.bit(job.name) == job.slot, job.name
        groups: dict[int, int] = {}
        for job in queued:
            groups.setdefault(id(job.shared), len(groups))
        shareds = {id(j.shared): j.shared for j in queued}
        arrays = [shareds[g]["cids"] for g in groups]
        union = arrays[0] if len(arrays) == 1 else sorted_unique(np.concatenate(arrays))
        member = None
        if len(arrays) > 1:
            member = np.zeros((len(union), len(arrays)), np.uint8)
            for k, group in enumerate(arrays):
                member[np.searchsorted(union, group), k] = 1
        slots = [j.slot for j in queued]
        of_group = [groups[id(j.shared)] for j in queued]
        fused = [j.fused for j in queued]
        found: list[list[np.ndarray]] = [[] for _ in queued]
        # In blocks of contacts: the tables below cost ~330 bytes per contact.
        for lo in range(0, len(union), ONE_PASS_BLOCK):
            block = union[lo : lo + ONE_PASS_BLOCK]
            # Who is asked about what, [contact, job]: the static-pass bits of the
            # block's contacts (one gather, unpacked to a byte per slot), the jobs'
            # slots taken, and for several groups, masked by group membership.
            words = np.ascontiguousarray(self._static.columns(block).T, dtype="<u8")
            flags = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
            todo = np.ascontiguousarray(flags[:, slots])
            if member is not None:
                todo &= member[lo : lo + ONE_PASS_BLOCK][:, of_group]
            out = run_fused(fused, self.engine.store, block, todo)
            for k in range(len(queued)):
                found[k].append(block[out[k]])
        with self._publishing():
            for k, job in enumerate(queued):
                got = found[k][0] if len(found[k]) == 1 else np.concatenate(found[k])
                after = cids_to_bitmap(np.ascontiguousarray(got, dtype=np.uint32))
                chunks, cand = job.shared["chunks"]
                self._settle(job.name, chunks, cand, after)

    def segment_put(self, name: str) -> None:
        """A segment was created or changed (or a static one replaced a dynamic one)."""
        self._profiles = None
        self._signatures = {}
        self._plans.clear()
        if self.clock is None:
            return
        seg = self.engine.segments.get(name)
        if seg.static:
            self.segment_deleted(name)
            return
        self.members.setdefault(name, BitMap())
        self._refresh(name, None, DEFINITION)
        # Dynamic segments that expand this one change with it (references inline).
        for user in self.engine.segments.dependents(name):
            if user in self.members:
                self._refresh(user, None, DEFINITION)

    def segment_deleted(self, name: str) -> None:
        self._profiles = None
        self._signatures = {}
        self._plans.clear()
        self._static.forget(name)
        members = self.members.pop(name, None)
        if members and self.clock is not None:
            cids = np.asarray(members.to_array(), np.uint32)
            change = np.full(len(cids), EXITED, np.int8)
            at = np.full(len(cids), self.clock)
            code = self.changes.cause_code(DEFINITION)
            self.changes.append(
                name, cids, change, at, np.full(len(cids), code, np.int16)
            )
            self._publish(name, cids, change, at)
            self._notify()

    def catalog_changed(self) -> None:
        if not self.tracking:
            return
        self._profiles = None
        self._signatures = {}
        for name, p in sorted(self.profiles().items()):
            if p.catalog:
                self._refresh(name, None, ITEMS)

    def rfm_changed(self) -> None:
        if not self.tracking:
            return
        for name, p in sorted(self.profiles().items()):
            if p.rfm:
                self._refresh(name, None, RFM)

    def _topological(self) -> list[str]:
        """Dynamic segments, each after the segments it refers to (by name otherwise)."""
        segs = self.engine.segments
        out: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            seen.add(name)
            seg = segs._segments.get(name)
            if seg is None:
                return
            for ref in sorted(seg.references):
                visit(ref)
            if name in self.members:
                out.append(name)

        for name in sorted(self.members):
            visit(name)
        return out

    # -- time ---------------------------------------------------------------------------
    def advance(self, now: float) -> None:
        """Move the clock to `now` (validated by the caller) and process what fell due."""
        try:
            self._advance(now)
        finally:
            with self.stepped:
                self.stepped_at = time.monotonic()
                self.stepped.notify_all()

    def driven(self, within_s: float) -> bool:
        """True if the clock stepped within the last `within_s` seconds."""
        at = self.stepped_at
        return at is not None and time.monotonic() - at <= within_s

    def await_clock(self, now_s: float, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the clock to reach `now_s`; True if it has. Called
        without the engine lock (the step needs the write lock)."""
        with self.stepped:
            return self.stepped.wait_for(
                lambda: self.clock is not None and self.clock >= now_s, timeout_s
            )

    def _advance(self, now: float) -> None:
        self.flush()
        if self.clock is None:
            self.clock = now
            self._n_seen = self.engine.store.n_contacts
            # Every name gets its event-property code first (as a step does): each
            # new code changes the plans' fingerprint, and the plans kept while the
            # segments are evaluated in turn would be compiled again at the next write.
            names = self.engine.store.dim_maps.setdefault("segment", IdMap())
            for name in self._dynamic():
                names.get_or_add_one(name)
            for name in self._dynamic():
                self.members[name] = BitMap()
                self._refresh(name, None, DEFINITION)
            return
        t0 = self.clock
        if now == t0:
            return
        rows: list[tuple] = []
        profiles = self.profiles()
        codes = {name: i for i, name in enumerate(sorted(profiles))}
        # Every name the step may publish gets its event-property code first: a new
        # code changes the plans' fingerprint, and would recompile every plan stepped
        # after the first segment to publish.
        names = self.engine.store.dim_maps.setdefault("segment", IdMap())
        for name in codes:
            names.get_or_add_one(name)
        # The segment events the step publishes change no sorted key (unless they
        # were made visits): the keys are sorted once for the whole step.
        visits = self.engine.store.aggregates.visit_events
        if not visits.intersection(SEGMENT_EVENT_TYPES):
            self._step_orders = {}
        try:
            for name in self._topological():
                got = self._advance_segment(name, codes[name], profiles[name], t0, now)
                for _, cids, change, at in got:
                    # before the segments that ask this one's events look for edges
                    self._publish(name, cids, change, at)
                rows += got
        finally:
            self._step_orders = None
        self.clock = now
        if not rows:
            return
        # Every change of the step, in time order (stable: segments by name).
        seg = np.concatenate([r[0] for r in rows])
        cids = np.concatenate([r[1] for r in rows])
        change = np.concatenate([r[2] for r in rows])
        at = np.concatenate([r[3] for r in rows])
        if len(rows) > 1:  # one segment's rows come in time order already
            order = np.argsort(at, kind="stable")
            seg, cids, change = seg[order], cids[order], change[order]
            at = at[order]
        log_codes = np.array(
            [self.changes.name_code(name) for name in sorted(profiles)], np.int32
        )
        cause = np.full(len(seg), self.changes.cause_code(TIME), np.int16)
        self.changes.append_coded(log_codes[seg], cids, change, at, cause)
        self._notify()

    def _candidates(
        self, profile: Profile, t0: float, t1: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """(points, cids): the moments at which a contact's value may change in the step.

        A point T stands for the second T itself (a threshold or birthday reached; T in
        (t0, t1]); a point T + 0.5 for the open second (T, T + 1) after a window edge
        passed T (T in [t0, t1): the step reaches into that open second)."""
        store = self.engine.store
        pts: list[np.ndarray] = []
        cids: list[np.ndarray] = []

        def edges(types: tuple[str, ...], offset: int, half: float) -> None:
            # half = 0: the second T = ts + offset itself, T in (t0, t1];
            # half = 0.5: the open second after T, reached when T in [t0, t1)
            if half:
                lo, hi = math.ceil(t0 - offset), math.ceil(t1 - offset)
            else:
                lo, hi = math.floor(t0 - offset) + 1, math.floor(t1 - offset) + 1
            if hi <= lo:
                return
            for etype in types:
                log = store.logs.get(etype)
                if log is None or log.n == 0:
                    continue
                r0, r1 = log.window(max(lo, 0), max(hi, 0))
                if r1 > r0:
                    ts = log.ts[r0:r1].astype(np.float64)
                    pts.append(ts + (offset + half))
                    cids.append(np.asarray(log.cid[r0:r1], np.uint32))

        for types, older, newer in profile.windows:
            edges(types, newer, 0.5)  # enters just after ts + newer
            edges(types, older, 0.5)  # leaves just after ts + older
        for types in profile.instants:
            edges(types, 0, 0.5)  # published for a change just after their second
        for types, ks, array in profile.days:
            for k in ks:
                if array is None:
                    edges(types, k * DAY_S, 0.0)
                    continue
                # last + k d in (t0, t1]: a slice of the contacts sorted by last
                keys, order = self._sorted(array)
                a = np.searchsorted(keys, t0 - k * DAY_S, "right")
                b = np.searchsorted(keys, t1 - k * DAY_S, "right")
                if b > a:
                    pts.append(keys[a:b] + k * DAY_S)
                    cids.append(order[a:b])
        if profile.age:
            p, c = self._birthdays(t0, t1)
            pts += p
            cids += c
        if not pts:
            return np.zeros(0), np.zeros(0, np.uint32)
        return np.concatenate(pts), np.concatenate(cids)

    def prime(self, profiles: Iterable[Profile]) -> None:
        """Build, or repair, the sorted per-contact keys (``_sorted``) that steps of
        segments with these `profiles` read. Called under the engine's *read* lock,
        before a step or a segment save takes the write lock: the first step after a
        segment that needs them was saved sorted the whole base there (~0.1-0.2 s at
        1M contacts), and every reader queued behind it (a writer waiting stops new
        readers). The step then finds the keys current, or repairs only the contacts
        written in between. Results are the same either way: the keys are checked
        against the data (``_gen``) wherever they are read."""
        if self.clock is None:
            return
        wanted: set[str] = set()
        for profile in profiles:
            wanted.update(array for _, _, array in profile.days if array is not None)
            if profile.age and self._has_birth_dates():
                wanted.add("birthday")
        for what in sorted(wanted):
            self._sorted(what)

    def prime_for(self, ast: dict, plan: Any = None) -> None:
        """``prime`` for a segment about to be saved with `ast` (references to saved
        segments expanded), and its static-pass operands (``StaticPass.prime``);
        `plan`: `ast` already compiled at the clock, if the caller has it. Under the
        read lock."""
        if self.clock is None:
            return
        eng = self.engine
        visits = frozenset(eng.store.aggregates.visit_events or VISIT_EVENTS)
        self.prime([Profile(ast, eng.segments.lookup, visits, eng.store.catalog)])
        parts = split(plan or eng._compiler(self.clock).compile(ast))
        if parts is not None:
            self._static.prime(parts[0], eng.store)

    def _has_birth_dates(self) -> bool:
        col = self.engine.store.contacts.column("birth_date")
        return col is not None and getattr(col, "kind", "") == "timestamp"

    def _sorted(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys ascending, cids) of a per-contact key, shared by every segment: a
        last-seen array (contacts that have one) or the birth month * 100 + day
        (``birthday``). Without it every one-second step would scan the whole base
        per condition.

        Kept across steps and repaired, not rebuilt: when contacts were touched since
        (``_gen``), the key source is compared with the copy it was built from and only
        the contacts whose source changed (and new contacts) are taken out and merged
        back in — a few passes over the arrays instead of a sort of the base. Within
        one step (``_step_orders``) the order is reused as is: the step only publishes
        segment events, which change no key (checked when the step starts)."""
        memo = self._step_orders
        if memo is not None and what in memo:
            return memo[what]
        store = self.engine.store
        n = store.n_contacts
        hit = self._orders.get(what)
        if (
            hit is not None
            and hit.store is store
            and hit.n == n
            and hit.gen == self._gen  # nothing touched since it was checked
        ):
            got = hit.keys, hit.cids
        else:
            source = self._key_source(what, n)
            if hit is not None and hit.store is store and hit.n <= n:
                changed = np.flatnonzero(source[: hit.n] != hit.source)
                if hit.n < n:
                    changed = np.r_[changed, np.arange(hit.n, n)]
                keys, cids = hit.keys, hit.cids
            else:
                changed = np.arange(n)
                keys, cids = np.zeros(0), np.zeros(0, np.uint32)
            new_keys, new_cids = self._keys_of(what, source, changed)
            keys, cids = _repaired(keys, cids, changed, new_keys, new_cids, n)
            self._orders[what] = _Order(self._gen, n, store, source, keys, cids)
            got = keys, cids
        if memo is not None:
            memo[what] = got
        return got

    def _key_source(self, what: str, n: int) -> np.ndarray:
        """The per-contact values a sorted key is derived from (a copy)."""
        if what != "birthday":
            return np.array(getattr(self.engine.store.aggregates, what)[:n])
        col = self.engine.store.contacts.column("birth_date")
        assert isinstance(col, NumericColumn), "age conditions need a birth_date date"
        m = min(n, len(col.values))
        values = np.full(n, NO_BIRTH_DATE, np.int64)
        valid = np.asarray(col.valid[:m]).astype(bool)
        values[:m] = np.where(
            valid, np.asarray(col.values[:m], np.int64), NO_BIRTH_DATE
        )
        return values

    @staticmethod
    def _keys_of(
        what: str, source: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(keys, cids) of the contacts `rows` that have a key."""
        values = source[rows]
        if what != "birthday":
            has = values > 0
            return values[has], rows[has].astype(np.uint32)
        has = values != NO_BIRTH_DATE
        days = (values[has] // (DAY_S * 1000)).astype("datetime64[D]")
        months = days.astype("datetime64[M]")
        month = months.astype(np.int64) % 12 + 1
        dom = (days - months).astype(np.int64) + 1
        # month * 100 + day fits 16 bits: sorted by a radix sort (see _repaired)
        return (month * 100 + dom).astype(np.int16), rows[has].astype(np.uint32)

    def _birthdays(self, t0: float, t1: float):
        """Midnights in (t0, t1] and the contacts whose age may turn over then."""
        if not self._has_birth_dates() or t1 < 0:
            return [], []
        first = math.floor(t0 / DAY_S) + 1
        last = math.floor(t1 / DAY_S)
        if last < first:
            return [], []
        memo = self._step_orders  # within a step: the same for every age segment
        if memo is not None and ("birthdays", t0, t1) in memo:
            return memo[("birthdays", t0, t1)]
        sorted_keys, order = self._sorted("birthday")
        pts, cids = [], []
        for d in range(first, last + 1):
            day = date(1970, 1, 1) + timedelta(days=d)
            wanted = [day.month * 100 + day.day]
            if (day.month, day.day) in ((2, 28), (2, 29), (3, 1)):
                wanted = [228, 229, 301]
            for w in wanted:
                a = np.searchsorted(sorted_keys, w, "left")
                b = np.searchsorted(sorted_keys, w, "right")
                if b > a:
                    cids.append(order[a:b].astype(np.uint32))
                    pts.append(np.full(b - a, float(d * DAY_S)))
        if memo is not None:
            memo[("birthdays", t0, t1)] = (pts, cids)
        return pts, cids

    def _advance_segment(
        self, name: str, code: int, profile: Profile, t0: float, t1: float
    ) -> list[tuple]:
        """The time-driven changes of one segment in the step (t0, t1]: rows
        ``(segment code, cids, change, at)`` in time order, with the members updated to
        the value at t1.

        Every (contact, moment) candidate pair of the step is decided by ONE
        ``evaluate_pairs`` call; the transitions then follow per contact in time order,
        vectorised: a contact's value at each of its moments against the value at the
        moment before (its membership at t0 for the first). A contact's last moment is
        evaluated at t1 itself — nothing can change it between the two — so the members
        are exactly the value at the clock, and a change found there is logged at the
        last moment's second."""
        members = self.members[name]
        if profile.rfm_timed:  # cannot be scheduled: the whole segment at t1
            before = members.copy()
            after = self._evaluate(name, t1, None)
            assert after is not None
            return self._difference_rows(
                code, members, before, after, float(math.floor(t1))
            )
        pts, cids = self._candidates(profile, t0, t1)
        if not len(cids):
            return []
        store = self.engine.store
        plan = self._pairs_plan(name, t1)
        parts = split(plan)
        cids, pts, first, last = _contact_moments(cids, pts)
        if parts is not None:
            # A contact that fails the attribute conjuncts fails them for the whole
            # step (a step changes no attribute): it was no member at t0 (members are
            # exact) and stays none, so none of its moments can change anything.
            ok = self._static.passes(name, parts[0], store, cids[first])
            if not ok.all():
                sizes = last - first + 1
                keep = np.repeat(ok, sizes)
                cids, pts, sizes = cids[keep], pts[keep], sizes[ok]
                if not len(cids):
                    return []
                last = np.cumsum(sizes) - 1
                first = last - sizes + 1
        nows = pts.copy()
        nows[last] = t1
        if parts is None:
            value = evaluate_pairs(plan, store, cids, nows)
        else:
            value = evaluate_conjunction(parts[1], store, cids, nows)
        contacts = cids[first]  # ascending, unique
        was = _isin_bitmap(contacts, members)
        prior = np.empty_like(value)  # each pair's value at the moment before it
        prior[1:] = value[:-1]
        prior[first] = was
        moved = np.flatnonzero(value != prior)
        final = value[last]
        members |= cids_to_bitmap(np.ascontiguousarray(contacts[final & ~was]))
        members -= cids_to_bitmap(np.ascontiguousarray(contacts[was & ~final]))
        if not len(moved):
            return []
        # In time order; at one moment entries before exits (as writes log them). A
        # contact's own changes are at distinct moments, so they stay in its order.
        # (moments are whole or half seconds: 4 * pts + exit is an exact sort key)
        moved = moved[_time_order(pts[moved], ~value[moved])]
        return [
            (
                np.full(len(moved), code, np.int32),
                cids[moved],
                np.where(value[moved], ENTERED, EXITED).astype(np.int8),
                np.floor(pts[moved]),
            )
        ]

    @staticmethod
    def _difference_rows(
        code: int, members: BitMap, before: BitMap, after: BitMap, at: float
    ) -> list[tuple]:
        """Rows for `before` -> `after` (entries first) at `at`; `members` updated."""
        entered, exited = after - before, before - after
        if not entered and not exited:
            return []
        members.update(entered)
        members.difference_update(exited)
        e = np.asarray(entered.to_array(), np.uint32)
        x = np.asarray(exited.to_array(), np.uint32)
        c = np.concatenate([e, x])
        change = np.concatenate(
            [np.full(len(e), ENTERED, np.int8), np.full(len(x), EXITED, np.int8)]
        )
        return [(np.full(len(c), code, np.int32), c, change, np.full(len(c), at))]

    # -- reads ------------------------------------------------------------------------
    def members_of(self, name: str) -> BitMap:
        if name not in self.members:
            seg = self.engine.segments.get(name)  # SegmentNotFound
            if seg.static:
                assert seg.members is not None
                return seg.members
            raise FailedPrecondition(
                "the engine clock is not set: dynamic segments are kept from the first "
                "Engine.advance(now) on"
            )
        return self.members[name]

    def table(
        self,
        name: str | None,
        since: float | None,
        until: float | None,
        start: int = 0,
        stop: int | None = None,
    ) -> pa.Table:
        """Rows [start, stop) of the log filtered by segment and since <= at < until."""
        seg, cids, change, at, cause = self.changes.columns()
        stop = len(seg) if stop is None else min(stop, len(seg))
        sl = slice(start, stop)
        seg, cids, change, at, cause = seg[sl], cids[sl], change[sl], at[sl], cause[sl]
        keep = np.ones(len(seg), bool)
        if name is not None:
            ix = self.changes._name_ix.get(name)
            if ix is None:
                keep[:] = False
            else:
                keep &= seg == ix
        if since is not None:
            keep &= at >= since
        if until is not None:
            keep &= at < until
        pos = np.flatnonzero(keep)
        names = np.array(self.changes.names or [""], dtype=object)
        causes = np.array(self.changes.causes or [""], dtype=object)
        ext = self.engine.store.contacts.external_ids(cids[pos])
        return pa.table(
            {
                "segment": pa.array(names[seg[pos]].tolist(), pa.string()),
                "customer_id": pa.array(ext, pa.string()),
                "change": pa.array(
                    np.where(change[pos] == ENTERED, "entered", "exited").tolist(),
                    pa.string(),
                ),
                "at": pa.array(
                    np.round(at[pos] * 1000).astype(np.int64), pa.int64()
                ).cast(pa.timestamp("ms", tz="UTC")),
                "cause": pa.array(causes[cause[pos]].tolist(), pa.string()),
                "position": pa.array(pos + start, pa.int64()),
            }
        )

    def history(self, name: str) -> pa.Table:
        """Members at the end of each UTC day, from the segment's first change to the
        clock's day (derived from the change log)."""
        seg, _, change, at, _ = self.changes.columns()
        ix = self.changes._name_ix.get(name)
        if ix is None:
            if name not in self.members:
                self.engine.segments.get(name)  # SegmentNotFound
            return pa.table(
                {"day": pa.array([], pa.date32()), "count": pa.array([], pa.int64())}
            )
        mine = seg == ix
        days = np.floor(at[mine] / DAY_S).astype(np.int64)
        delta = change[mine].astype(np.int64)
        last_day = days.max() if len(days) else 0
        if self.clock is not None:
            last_day = max(last_day, math.floor(self.clock / DAY_S))
        first_day = days.min() if len(days) else last_day
        span = np.arange(first_day, last_day + 1)
        per_day = np.bincount(days - first_day, weights=delta, minlength=len(span))
        counts = np.cumsum(per_day).astype(np.int64)
        return pa.table(
            {
                "day": pa.array(span.astype("datetime64[D]"), pa.date32()),
                "count": pa.array(counts, pa.int64()),
            }
        )


NO_BIRTH_DATE = np.iinfo(np.int64).min  # _key_source's value for a missing birth date


class _Job(NamedTuple):
    """A segment of a flush queued for its one pass (``LiveSegments._run_jobs``)."""

    name: str
    fused: Any  # its fused program (``segd.segments.pairs._fused``), current
    shared: dict  # its group's: cids (the candidates), chunks, ...
    slot: int  # its static pass's bit (``StaticPass.slot``)


class _Order(NamedTuple):
    """A per-contact key sorted ascending (``LiveSegments._sorted``)."""

    gen: int  # LiveSegments._gen when checked against the data
    n: int  # contacts covered
    store: Any
    source: np.ndarray  # the per-contact values the keys were derived from
    keys: np.ndarray  # float64, ascending
    cids: np.ndarray  # uint32, the contact of each key


def _repaired(
    keys: np.ndarray,
    cids: np.ndarray,
    changed: np.ndarray,
    new_keys: np.ndarray,
    new_cids: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The sorted (`keys`, `cids`) without the contacts `changed`, with (`new_keys`,
    `new_cids`) (integer keys, any order) merged in; keys come back as float64."""
    if len(changed) and len(cids):
        gone = np.zeros(n, bool)
        gone[changed] = True
        keep = ~gone[cids]
        keys, cids = keys[keep], cids[keep]
    if not len(new_keys):
        return keys, cids
    # a radix sort for 16-bit keys, numpy's fastest otherwise (ties in any order)
    order = np.argsort(new_keys, kind="stable" if new_keys.itemsize <= 2 else None)
    new_keys = new_keys[order].astype(np.float64)
    new_cids = new_cids[order]
    if not len(keys):
        return new_keys, new_cids
    at = np.searchsorted(keys, new_keys, "right")
    return np.insert(keys, at, new_keys), np.insert(cids, at, new_cids)


def _contact_moments(
    cids: np.ndarray, pts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs sorted by contact then moment, without repeats; with the row of
    each contact's first and last moment.

    Moments are whole or half seconds, so a pair packs into one uint64 (contact in the
    high half, twice the moment's offset in the low half) and one plain sort of those
    does what a lexsort of two columns would, several times faster."""
    if not len(cids):
        empty = np.zeros(0, np.intp)
        return cids, pts, empty, empty
    base = math.floor(float(pts.min()))
    span = 2 * (float(pts.max()) - base)
    if span < 2**32:
        key = np.left_shift(cids.astype(np.uint64), np.uint64(32))
        key |= (2 * (pts - base)).astype(np.uint64)
        key.sort()
        keep = np.ones(len(key), bool)
        keep[1:] = key[1:] != key[:-1]
        key = key[keep]
        cids = np.right_shift(key, np.uint64(32)).astype(np.uint32)
        pts = (key & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2 + base
    else:  # a step of more than 68 years
        order = np.lexsort((pts, cids))
        cids, pts = cids[order], pts[order]
        keep = np.ones(len(cids), bool)
        keep[1:] = (cids[1:] != cids[:-1]) | (pts[1:] != pts[:-1])
        cids, pts = cids[keep], pts[keep]
    starts = np.ones(len(cids), bool)
    starts[1:] = cids[1:] != cids[:-1]
    first = np.flatnonzero(starts)
    last = np.r_[first[1:] - 1, len(cids) - 1]
    return cids, pts, first, last


def _time_order(pts: np.ndarray, exits: np.ndarray) -> np.ndarray:
    """The stable order of changes by (moment, entry before exit): `pts` whole or half
    seconds. The key ``4 * (pts - min) + exit`` and the position pack into one uint64
    when the key fits 24 bits (steps up to ~48 days): one plain sort of those instead
    of a stable argsort of floats (~3x faster on 100k changes)."""
    if not len(pts):
        return np.zeros(0, np.intp)
    key = 4.0 * (pts - math.floor(float(pts.min()))) + exits
    if float(key.max()) >= 2**24 or len(pts) >= 2**40:
        return np.argsort(key, kind="stable")
    packed = np.left_shift(key.astype(np.uint64), np.uint64(40))
    packed |= np.arange(len(pts), dtype=np.uint64)
    packed.sort()
    return (packed & np.uint64(2**40 - 1)).astype(np.intp)


def _bitmap(cids: np.ndarray) -> BitMap:
    """A BitMap of `cids` (any order, repeats): ``BitMap(array)`` adds them one by
    one, ~10x slower than sorting them first."""
    return cids_to_bitmap(sorted_unique(cids))


def _isin_bitmap(sorted_cids: np.ndarray, bitmap: BitMap) -> np.ndarray:
    """Membership in `bitmap` of each of the ascending unique `sorted_cids`: the
    candidates as a bitmap intersected with it (cost ~ the candidates), the few
    members found marked by binary search."""
    out = np.zeros(len(sorted_cids), bool)
    if not bitmap or not len(sorted_cids):
        return out
    both = cids_to_bitmap(np.ascontiguousarray(sorted_cids, np.uint32)) & bitmap
    if both:
        out[np.searchsorted(sorted_cids, np.asarray(both.to_array(), np.uint32))] = True
    return out


def clock_value(now: Any) -> float:
    """`now` as accepted by ``Engine.segment(now=...)``, as epoch seconds."""
    from segd.timeutil import resolve_now

    if now is None:
        raise InvalidInput.at(
            "now", "advance needs a time (a datetime or epoch seconds)"
        )
    try:
        return resolve_now(now)
    except InvalidQuery as exc:
        raise InvalidInput.at("now", exc.reason) from None


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


__all__ = ["LiveSegments", "SegmentNotFound", "clock_value", "iso"]


def _keep_order(plan: Any) -> None:
    """Let AND nodes of a reused plan keep the operand order of their first run."""
    from segd.segments.plan import AndNode

    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, AndNode):
            node.keep_order = True
        stack.extend(node.children())


def _rebinds(plan: Any) -> bool:
    """Whether ``evaluate_pairs`` may re-bind `plan` (it has a sub-tree it evaluates
    by the reference: an aggregate over a period, ``rfm.entered``). Noted on the plan."""
    hit = getattr(plan, "_pairs_rebinds", None)
    if hit is None:
        from segd.segments.conditions import AggregateNode
        from segd.segments.rfm_node import RfmEnteredNode

        hit, stack = False, [plan]
        while stack and not hit:
            node = stack.pop()
            hit = isinstance(node, RfmEnteredNode) or (
                isinstance(node, AggregateNode) and bool(node.period)
            )
            stack.extend(node.children())
        plan._pairs_rebinds = hit
    return hit


def rebind(plan: Any, now: float) -> None:
    """Move a compiled plan to another `now`: the nodes that read it recompute their
    bounds (event periods, aggregate periods and days, age); the rest is unchanged."""
    from segd.segments.conditions import AgeAttr, AggregateNode
    from segd.segments.event_node import EventNode
    from segd.timeutil import period_bounds_s

    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, EventNode):
            node.now_s = now
            node.lo_s, node.hi_s = period_bounds_s(node.ast.get("period"), now, "$")
        elif isinstance(node, AggregateNode):
            node.now_s = now
        elif isinstance(node, AgeAttr):
            shared = node.shared
            AgeAttr.__init__(node, node.ast, node.key, node.column, now, "$")
            node.shared = shared
        stack.extend(node.children())


class LiveApi:
    """The Engine methods of live segments (mixed into ``segd.core.Engine``)."""

    live: LiveSegments

    @property
    def clock(self) -> float | None:
        """The engine clock (epoch seconds), None until the first ``advance``."""
        return self.live.clock

    def advance(self, now: Any) -> float:
        """Move the engine clock forward to `now` (what ``segment(now=...)`` accepts) and
        process everything that became due: every dynamic segment is then exactly
        ``segment(query, now=now)``, and each change in between is logged at its own
        moment. Moving the clock back is ``InvalidInput``. Returns the clock."""
        from segd import mutations as mut

        now_s = clock_value(now)
        eng: Any = self
        if self.live.clock is not None and now_s > self.live.clock:
            # the sorted keys the step reads, built or repaired concurrently with
            # queries rather than under the write lock (see LiveSegments.prime)
            with eng._lock.read():
                self.live.prime(self.live.profiles().values())
        with eng._writing(clock_step=True):
            clock = self.live.clock
            if clock is not None and now_s < clock:
                raise InvalidInput.at(
                    "now",
                    f"{iso(now_s)} is before the engine clock {iso(clock)} "
                    "(the clock only moves forward)",
                )
            if clock is not None and now_s == clock:
                return clock
            seq = eng._commit(mut.ClockAdvanced(now_s))
        eng._wait_durable(seq)
        return now_s

    def members(self, name: str) -> Any:
        """A saved segment's members now: a dynamic one's as of the clock (kept exact,
        nothing is evaluated), a static one's frozen members. A ``SegmentResult``."""
        from segd.results import SegmentResult

        eng: Any = self
        with eng._lock.read():
            bitmap = self.live.members_of(name).copy()
            now = self.live.clock if self.live.clock is not None else 0.0
        return SegmentResult(bitmap, eng.store.contacts.external_ids, now, ())

    def segment_changes(
        self,
        name: str | None = None,
        since: Any = None,
        until: Any = None,
        *,
        start: int = 0,
        stop: int | None = None,
    ) -> pa.Table:
        """Logged membership changes ``segment, customer_id, change, at, cause,
        position`` with `since` <= at < `until`, in log order. ``position`` is the row's
        place in the log (``start`` / ``stop`` select by it: a reader resumes from the
        last position it saw + 1)."""
        since_s = None if since is None else _moment(since, "since")
        until_s = None if until is None else _moment(until, "until")
        eng: Any = self
        with eng._lock.read():
            if name is not None and name not in self.live.changes._name_ix:
                eng.segments.get(name)  # SegmentNotFound for unknown names
            return self.live.table(name, since_s, until_s, start, stop)

    def segment_history(self, name: str) -> pa.Table:
        """Members of segment `name` at the end of each UTC day (``day, count``)."""
        eng: Any = self
        with eng._lock.read():
            return self.live.history(name)

    @property
    def changes_position(self) -> int:
        """Rows in the change log (the next change's position)."""
        return self.live.changes.n


def _moment(value: Any, where: str) -> float:
    if isinstance(value, str):
        from segd.timeutil import parse_instant_s

        try:
            return parse_instant_s(value, where)
        except InvalidQuery as exc:
            raise InvalidInput.at(where, str(exc)) from None
    try:
        return clock_value(value)
    except InvalidInput as exc:
        raise InvalidInput.at(where, str(exc)) from None
