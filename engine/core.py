"""``Engine``: one shard — the store, the saved segments and the evaluator.

Every mutation is validated, turned into a record (``segd.mutations``) and committed under
the write lock: a durable engine (``Engine.open``) writes the record to its write-ahead log
first, then ``_apply`` changes the store — the same ``_apply`` recovery replays the log
with. Writers wait for the log's fsync after releasing the lock (group commit). Every read
holds the read lock, and the kernels it calls release the GIL, so reads run on all cores.
See docs/engine-api.md and docs/storage.md.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from segd import export as export_mod
from segd import identity_api, ingest
from segd import mutations as mut
from segd import rfm as rfm_mod
from segd._version import __version__
from segd.aggregates import VISIT_EVENTS
from segd.durability import IdempotencyTable
from segd.errors import (
    ContactNotFound,
    FailedPrecondition,
    InvalidInput,
    SegdError,
    SegmentNotFound,
)
from segd.explain import Explanation, Profile, explain_tree
from segd.live import LiveApi, LiveSegments
from segd.recs import Recommender
from segd.results import QueryWarning, SegmentResult
from segd.rwlock import RWLock
from segd.segments.ast import walk
from segd.segments.compile import Compiler
from segd.segments.context import Context
from segd.segments.limits import Budget, budget_of
from segd.segments.plan import Node
from segd.segments.query import Prepared, prepare
from segd.segments.registry import (
    SEGMENT_EVENT_TYPES,
    SavedSegment,
    SegmentRegistry,
)
from segd.store import LoadedSource, Store
from segd.timeutil import resolve_now

Query = str | dict | Prepared
# Called with a segment about to be saved and its count (None when not evaluated);
# raising stops the save (see Engine.create_segment).
Respond = Callable[[SavedSegment, "int | None"], None]
RESULT_CACHE_SIZE = 64  # evaluated segments kept until the next write
PLAN_CACHE_SIZE = 64  # compiled plans kept until the next write (Engine._plan)
Source: TypeAlias = str | Path | pa.Table | pa.RecordBatch | list


def _is_attribute_key(key: str) -> bool:
    """A value index over a contact attribute (``attr:<column>``): what upserts change."""
    return key.startswith("attr:")


@dataclass(frozen=True)
class LoadReport:
    """What one load / append / upsert did."""

    kind: str
    rows: int
    seconds: float
    # True when an idempotency key had been applied already: nothing was applied now
    # and `rows` / `sequence` are those of the original call.
    duplicate: bool = False
    # For event appends counted in the sequence (see Engine.events_sequence): the
    # sequence number of the batch's last event.
    sequence: int = 0
    # Events dropped because their event_id was seen before (0 for contacts and items).
    duplicate_events: int = 0

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _deadline_s(deadline: float | Budget | None) -> float | None:
    return deadline.deadline if isinstance(deadline, Budget) else deadline


# A query asked on the server's clock this far into a second is evaluated for the next
# second in the background (Engine._refresh_ahead); such a refresh gives up after
# REFRESH_AHEAD_DEADLINE_S.
# A clock step waits up to this long for a moment without readers before it stops new
# readers to get in (segd.rwlock: a polite writer). Its entries and exits are logged at
# their own moments however late the step runs, so a step can wait; readers behind one
# long reader (a segment save evaluating) could not.
CLOCK_STEP_POLITE_S = 1.0
REFRESH_AHEAD_AFTER_S = 0.5
REFRESH_AHEAD_DEADLINE_S = 5.0
# A clock stepped within this long is driven (the server steps it every second): a saved
# segment asked on the server's clock one second ahead of it waits up to
# CLOCK_STEP_WAIT_S for the step (Engine._await_clock_step) instead of evaluating.
CLOCK_DRIVEN_S = 2.0
CLOCK_STEP_WAIT_S = 0.25


class _Flight:
    """One evaluation under way: its waiters block on `done`; `result` stays None when
    it failed (each waiter then evaluates on its own and sees its own error)."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: tuple[BitMap, tuple[QueryWarning, ...]] | None = None


class Engine(LiveApi):
    """One shard of segd (see module docstring and docs/engine-api.md)."""

    def __init__(
        self,
        *,
        result_cache_size: int = RESULT_CACHE_SIZE,
        visit_events: Iterable[str] = VISIT_EVENTS,
    ) -> None:
        """`result_cache_size`: segment results kept between writes (0 turns it off).

        `visit_events`: the event types that count as a visit (`days_since_last_visit`);
        on-site activity by default, never email, message or ad events
        (docs/segment-language.md).
        """
        if isinstance(visit_events, str):
            raise TypeError("visit_events is a collection of event types, not a str")
        self.store = Store()
        self.store.aggregates.visit_events = frozenset(visit_events)
        self.result_cache_size = result_cache_size
        # References to dynamic segments in a query asked at the engine clock are
        # answered from their live members (``_live_members_at``); False inlines their
        # plans always (the tests' independent evaluation does).
        self.live_refs = True
        self.segments = SegmentRegistry()
        self._lock = RWLock()
        self._started = time.time()
        # Results of recent evaluations, valid until the next mutation (see segment()).
        self._results: collections.OrderedDict[
            tuple, tuple[BitMap, tuple[QueryWarning, ...]]
        ] = collections.OrderedDict()
        self._results_lock = threading.Lock()
        # Evaluations under way, by cache key: callers asking the same (query, now)
        # meanwhile wait for that one instead of evaluating it again (see segment()).
        self._inflight: dict[tuple, _Flight] = {}
        self._refreshing: set[tuple] = set()  # next-second keys being refreshed ahead
        # Keys of cached results a clock step leaves valid (``_writing(clock_step=True)``):
        # their queries read no segment events, directly or through a referenced segment.
        # Always a subset of ``_results``' keys (evictions and drops remove them too).
        self._clock_free: set[tuple] = set()
        # Compiled plans of recent (query AST, now) pairs, valid until the next mutation
        # like the results (see _plan); under _results_lock.
        self._plans: collections.OrderedDict[
            tuple[int, float, bool], tuple[dict, Node, tuple[QueryWarning, ...]]
        ] = collections.OrderedDict()
        # RFM: config, latest computation, transitions, daily counts (segd.rfm).
        self.rfm_state = rfm_mod.RfmState()
        self._rfm_compute_lock = threading.Lock()  # one rfm_compute at a time
        # Durability (Engine.open): the log, its directory and its lock; None in memory.
        self._wal = None
        self._data_dir: Path | None = None
        self._dir_lock = None
        self._bulk = threading.Lock()  # a bulk load and a snapshot never overlap
        # Idempotency keys applied, with their acknowledgements (see durability.py).
        self.idempotency = IdempotencyTable()
        # Events appended by calls that asked to be counted (the gRPC API): the
        # `sequence` of ingest acknowledgements. Durable with the log.
        self.events_sequence = 0
        # What Engine.open recovered (None for an in-memory engine).
        self.recovery: dict | None = None
        # Write snapshots from a forked child (None: segd.snapshot's default, a fork
        # where it is possible and safe); False writes in process under the read lock.
        self.snapshot_background: bool | None = None
        # Called inside the write lock after a record changed contacts' data (see
        # Engine._touched): live segments (and later triggers) hook in here.
        # The value indexes' hook runs first, so hooks that query see them exact.
        self._touch_hooks: list[Callable[[np.ndarray, str], None]] = [
            self._index_touched
        ]
        # The clock and the dynamic segments kept exact (segd.live); the hook goes
        # through self.live so a snapshot restore can replace it.
        self.live = LiveSegments(self)
        self._touch_hooks.append(lambda cids, cause: self.live.touched(cids, cause))
        # Recommendation models and lookups (segd.recs); hooks into _touch_hooks.
        self.recs = Recommender(self)

    # -- durability ---------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path,
        fsync: str = "always",
        *,
        fsync_interval_ms: int = 100,
        result_cache_size: int = RESULT_CACHE_SIZE,
        segment_bytes: int | None = None,
    ) -> Engine:
        """A durable engine over the data directory `path` (created if missing).

        Recovers what is there (newest valid snapshot + the log after it), then logs
        every mutation. `fsync`: ``always`` (a write returns once its record is on disk;
        concurrent writers share fsyncs), ``interval`` (fsync every `fsync_interval_ms`;
        a crash may lose that much acknowledged work) or ``off`` (benchmarks). A second
        process on the same directory gets ``DataDirLocked``; a damaged log record in
        the middle stops the open with ``CorruptLog``. See docs/storage.md.
        """
        from segd import durability

        return durability.open_engine(
            cls,
            Path(path),
            fsync=fsync,
            fsync_interval_ms=fsync_interval_ms,
            result_cache_size=result_cache_size,
            segment_bytes=segment_bytes,
        )

    @property
    def durable(self) -> bool:
        """True for an engine opened on a data directory (Engine.open)."""
        return self._wal is not None

    @property
    def data_dir(self) -> Path | None:
        return self._data_dir

    def snapshot(self) -> Any:
        """Write a snapshot now and drop the log segments it covers; its SnapshotInfo."""
        if self._wal is None:
            raise FailedPrecondition(
                "this engine is in memory only: open one with Engine.open(path) "
                "(segctl serve without --in-memory) to take snapshots"
            )
        from segd import durability

        return durability.take_snapshot(self)

    def close(self) -> None:
        """Flush the log to disk and release the data directory (no-op in memory).
        Later writes fail; reads keep working."""
        if self._wal is None or self._dir_lock is None:
            return
        from segd import durability

        durability.close_engine(self)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _commit(self, m: mut.Mutation) -> int:
        """Inside the write lock: log `m` (a durable engine), then apply it. Returns the
        log sequence to wait for (0 in memory). If logging fails nothing is applied."""
        seq = 0
        if self._wal is not None:
            seq = self._wal.append(mut.encode(m))
        self._apply(m)
        return seq

    def _wait_durable(self, seq: int) -> None:
        """After the write lock is released: return once record `seq` is on disk
        (fsync=always); many writers waiting share one fsync."""
        if self._wal is not None and seq:
            self._wal.wait_durable(seq)

    def _apply(self, m: mut.Mutation) -> None:
        """The one place a record changes the engine (live calls and log replay)."""
        store = self.store
        resolved = getattr(m, "identity", None)
        if resolved is not None:
            for pair in identity_api.apply_resolved(self, resolved):
                self._touched(pair, "merge")
        if isinstance(m, mut.EventsAppended):
            applied = ingest.apply_events(store, m.batch, self._touched)
            if m.source is not None:
                ingest.record_source(
                    store, m.source["digest"], m.source.get("name", ""), applied
                )
        elif isinstance(m, mut.AttributesUpserted):
            if m.target == "contacts":
                cids = ingest.apply_attributes(
                    store.contacts, m.batch, store.contacts.ensure
                )
                store.sync_sizes()
                self._touched(np.asarray(cids), "upsert")
            else:
                ingest.apply_attributes(store.catalog, m.batch, store.catalog.ensure)
                store.catalog.touch()
                self.live.catalog_changed()
        elif isinstance(m, mut.SegmentPut):
            self.segments.put(m.segment)
            self.live.segment_put(m.segment.name)
        elif isinstance(m, mut.SegmentDeleted):
            self.segments.remove(m.name)
            self.live.segment_deleted(m.name)
        elif isinstance(m, mut.ClockAdvanced):
            self.live.advance(m.now)
        elif isinstance(m, mut.RfmConfigSet):
            self.rfm_state.apply_config(
                rfm_mod.parse_config(m.config, rfm_mod.RfmConfig())
            )
        elif isinstance(m, mut.RfmComputed):
            self.rfm_state.apply_computed(m.result)
            self.live.rfm_changed()
        elif isinstance(
            m,
            mut.LinkAdded
            | mut.LinkRemoved
            | mut.ContactsMerged
            | mut.ContactsMergedMany,
        ):
            merged = identity_api.apply(self, m)
            if merged is not None:
                self._touched(merged, "merge")
        else:
            raise TypeError(f"_apply cannot apply {type(m).__name__}")
        self.live.flush()
        self._note_applied(m)

    def _note_applied(self, m: mut.Mutation) -> None:
        """The bookkeeping of an applied record: its idempotency key and, for counted
        event batches, the event sequence (replay calls it for grouped event records)."""
        if isinstance(m, mut.EventsAppended) and m.ack is not None:
            if m.ack.get("sequence") is not None:
                self.events_sequence = max(self.events_sequence, m.ack["sequence"])
        key = getattr(m, "idempotency_key", None)
        if key is not None:
            self.idempotency.put(key, getattr(m, "ack", None) or {}, self._last_seq())

    def _touched(self, cids: np.ndarray, cause: str) -> None:
        """Inside the write lock, after a record changed the data of contacts `cids`
        (internal contact numbers; may repeat): tell every hook. `cause` says why: the
        event type of appended events, ``upsert`` for contact attributes, ``merge``
        for an identity merge (survivor and merged contact). The one notification path
        for live segments and triggers, so replay notifies exactly as live calls do."""
        for hook in self._touch_hooks:
            hook(cids, cause)

    def _index_touched(self, cids: np.ndarray, cause: str) -> None:
        """Mark contacts dirty in the value indexes (segd.aggindex) that `cause` can
        change: an identity merge changes everything, an upsert the attribute indexes
        (``attr:*``), an event type only the rollups it feeds (``agg:*``, see
        ``Aggregates.arrays_changed_by``). So a view leaves the order indexes clean, and
        the segment events live segments append on every membership change leave every
        index clean unless configured as visits (marking them sent every index-answered
        condition back to a re-check path as soon as the clock was set)."""
        keys: Callable[[str], bool] | None
        if cause == "merge":
            keys = None
        elif cause == "upsert":
            keys = _is_attribute_key
        else:
            changed = {
                f"agg:{name}" for name in self.store.aggregates.arrays_changed_by(cause)
            }
            if not changed:
                return
            keys = changed.__contains__
        self.store.value_index.touched(cids, self.store.n_contacts, keys)

    def _last_seq(self) -> int:
        return self._wal.last_seq if self._wal is not None else 0

    def _duplicate(self, key: str | None, kind: str, t0: float) -> LoadReport | None:
        """The original report when `key` was applied already (once it is durable)."""
        if key is None:
            return None
        if not isinstance(key, str) or not key or len(key) > 256:
            raise InvalidInput.at(
                "idempotency_key", "expected 1-256 characters of text"
            )
        hit = self.idempotency.get(key)
        if hit is None:
            return None
        ack, seq = hit
        self._wait_durable(seq)
        return LoadReport(
            kind,
            int(ack.get("rows", 0)),
            time.perf_counter() - t0,
            duplicate=True,
            sequence=int(ack.get("sequence") or 0),
        )

    def _apply_event_chunks(
        self,
        batches: Iterable[tuple[int, ingest.EventBatch]],
        progress: Callable[[str, int], None] | None = None,
        *,
        shrink: bool = True,
    ) -> int:
        """Apply validated chunks of one bulk load: encode each, then append each type
        once (one sort per type, not a merge per chunk). `batches`: (rows done, batch).
        Returns the rows appended (rows whose event_id was seen before are dropped).
        `shrink`: trim the logs' growth slack afterwards (the end of a bulk load)."""
        parts: dict[str, list] = {}
        for done, batch in batches:
            for name, rows in ingest.encode_events(self.store, batch).items():
                parts.setdefault(name, []).append(rows)
            if progress:
                progress("encode", done)
        return self._append_parts(parts, shrink=shrink)

    def _append_parts(self, parts: dict[str, list], *, shrink: bool = True) -> int:
        """Append a bulk load's encoded rows (type -> TypeRows chunks), each type once,
        and tell the touch hooks; the rows appended. `shrink` as for
        ``_apply_event_chunks``."""
        appended = 0
        if ingest.PARALLEL_COMMIT and len(parts) > 1:
            appended = self._append_parts_overlapped(parts)
        else:
            for name in list(parts):
                rows = ingest.concat_rows(parts.pop(name))
                ingest.sort_by_time(rows)
                ingest.append_rows(self.store, name, rows)
                appended += len(rows.cids)
                self._touched(rows.cids, name)
        self.live.flush()
        if shrink:
            for log in self.store.logs.values():
                log.shrink_to_fit()
        return appended

    def _append_parts_overlapped(self, parts: dict[str, list]) -> int:
        """``_append_parts``'s loop on two threads: a type's log append (columns and
        postings, ``EventLog.append``) runs on a worker while this thread folds the
        same rows into the rollups (``Aggregates.apply``) and then joins and sorts the
        next type's chunks. Both sides are mostly nogil kernels and numpy sorts, and
        they touch disjoint state (one type's log; the per-contact rollups; the next
        type's staged parts). The hooks still see each type whole, in order: a type's
        ``_touched`` runs once its log and rollups are done and before the next type's
        log or rollups change."""
        appended = 0
        pending: tuple[str, ingest.TypeRows, Future] | None = None

        def finish(done: tuple[str, ingest.TypeRows, Future]) -> None:
            name, rows, log_append = done
            log_append.result()  # the worker's exception, if any, is raised here
            self._touched(rows.cids, name)

        # Leaving the block waits for the worker, also when this thread raised.
        with ThreadPoolExecutor(1, thread_name_prefix="segd-commit") as worker:
            for name in list(parts):
                rows = ingest.concat_rows(parts.pop(name))
                ingest.sort_by_time(rows)
                if pending is not None:
                    done, pending = pending, None
                    finish(done)
                log = self.store.log(name)
                log_append = worker.submit(
                    log.append, rows.cids, rows.ts, rows.dims, rows.amount
                )
                pending = (name, rows, log_append)
                self.store.aggregates.apply(
                    name, rows.cids, rows.ts, rows.amount, rows.dims.get("order_id")
                )
                appended += len(rows.cids)
            if pending is not None:
                finish(pending)
        return appended

    @contextlib.contextmanager
    def _writing(self, *, clock_step: bool = False) -> Iterator[None]:
        """The write lock; on the way out every cached result is dropped, except, after
        a `clock_step` (``advance``), the results of queries that read no segment
        events: a step changes nothing else (the segment events it appends are not
        visits unless so configured), and a result is keyed by its own `now`, so
        it stays exact. A server steps its clock every second: dropping everything
        then made the callers of each second wait for a fresh evaluation (and threw
        away the next second's result evaluated ahead, see ``_refresh_ahead``)."""
        with self._lock.write(polite_s=CLOCK_STEP_POLITE_S if clock_step else 0.0):
            try:
                yield
            finally:
                with self._results_lock:
                    self._plans.clear()
                    visits = self.store.aggregates.visit_events
                    if clock_step and not visits.intersection(SEGMENT_EVENT_TYPES):
                        for key in [
                            k for k in self._results if k not in self._clock_free
                        ]:
                            del self._results[key]
                    else:
                        self._results.clear()
                        self._clock_free.clear()

    # -- ingest -----------------------------------------------------------------------
    def load_contacts(
        self,
        source: Source,
        *,
        schema: dict[str, str] | None = None,
        on_conflict: str = "reject",
    ) -> LoadReport:
        """Add or update contacts from CSV / Parquet / a table (`schema`: column -> kind).
        Rows without a customer_id name their contact by link columns, as for
        ``upsert_contacts`` (`on_conflict`: ``reject`` or ``merge``)."""
        return self.upsert_contacts(source, schema=schema, on_conflict=on_conflict)

    def upsert_contacts(
        self,
        source: Source,
        *,
        schema: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        on_conflict: str = "reject",
    ) -> LoadReport:
        """Add or update contacts. A repeated `idempotency_key` applies nothing and
        returns the first call's report (``duplicate=True``).

        A row whose customer_id is NULL (or a batch without the column) names its
        contact by link columns (``email``, ``phone``, ``card``, ``crm_id``,
        ``device_id``; see docs/data-model.md "Identity"); `on_conflict` (``reject``
        or ``merge``) says what rows whose links name different contacts do."""
        t0 = time.perf_counter()
        dup = self._duplicate(idempotency_key, "contacts", t0)
        if dup is not None:
            return dup
        table = ingest.read_table(source, "contacts", schema)
        table, ids = identity_api.split_links(self, table, "contacts")
        batch = ingest.validate_attributes(
            table, self.store.contacts, "contacts", "customer_id", schema
        )
        return self._upsert(
            "contacts", batch, table.num_rows, idempotency_key, t0, ids, on_conflict
        )

    def _upsert(
        self,
        target: str,
        batch: ingest.AttributeBatch,
        rows: int,
        key: str | None,
        t0: float,
        ids: Any = None,
        on_conflict: str = "reject",
    ) -> LoadReport:
        encoded = (
            mut.prepare_attributes(batch)
            if self._wal is not None and ids is None
            else None
        )
        with self._writing():
            dup = self._duplicate(key, target, t0) if key is not None else None
            if dup is None:
                ident = None
                if ids is not None:
                    resolved = identity_api.resolve_batch(
                        self, ids, rows, target, on_conflict
                    )
                    batch = identity_api.resolved_attributes(batch, resolved)
                    ident = identity_api.record(resolved)
                if target == "contacts":
                    keyed = identity_api.canonical_keys(self, batch)
                    if keyed is not batch:
                        batch, encoded = keyed, None
                ack = {"rows": rows} if key is not None else None
                m = mut.AttributesUpserted(
                    target, batch, key, ack, encoded, identity=ident
                )
                seq = self._commit(m)
        if dup is not None:
            return dup
        self._wait_durable(seq)
        return LoadReport(target, rows, time.perf_counter() - t0)

    def upsert_contact(self, customer_id: str, **attributes: Any) -> None:
        """Set some attributes of one contact (creating it if new)."""
        self.upsert_contacts([{"customer_id": customer_id, **attributes}])

    def load_items(self, source: Source) -> LoadReport:
        return self.upsert_items(source)

    def upsert_items(
        self, source: Source, *, idempotency_key: str | None = None
    ) -> LoadReport:
        """Add or update catalog items (`idempotency_key` as for upsert_contacts)."""
        t0 = time.perf_counter()
        dup = self._duplicate(idempotency_key, "items", t0)
        if dup is not None:
            return dup
        table = ingest.read_table(source, "items")
        batch = ingest.validate_attributes(
            table, self.store.catalog, "items", "item_id"
        )
        return self._upsert("items", batch, table.num_rows, idempotency_key, t0)

    def load_events(
        self,
        source: Source,
        *,
        rows_per_chunk: int = 2_000_000,
        progress: Callable[[str, int], None] | None = None,
        on_conflict: str = "reject",
    ) -> LoadReport:
        """Bulk-load events: all or nothing, in bounded memory, one sort per type.

        The source is streamed in chunks (Parquet by row group) and, in memory, read
        once: each chunk is validated and staged against the load's own dictionaries
        (``ingest.StagedLoad``); once every chunk has passed, the distinct values are
        added to the engine and each type is appended once — so a file whose rows are
        not in time order costs one sort, not a merge per chunk. A durable engine and a
        load by link columns read the source twice (validate, then apply).
        `progress(phase, rows_done)` is called after each chunk.

        Identity, as for ``append_events``: a row names its contact by ``customer_id``
        or, when that is NULL or the column is absent, by link columns (``email``,
        ``phone``, ``card``, ``crm_id``, ``device_id``, custom kinds), and the whole
        load is resolved as ONE batch (rows sharing a value anywhere in the file are one
        contact; ``segd.load_identity``). Conflicts raise ``IdentityConflict`` (at the
        first row of each conflicting identity) and load nothing, or merge with
        ``on_conflict="merge"``; a row naming nobody is refused by row.

        A durable engine logs each validated chunk as a record (outside the write
        lock), then a commit record inside it (with the load's identity resolution);
        recovery applies a load's chunks only when it finds the commit, so a load cut
        short by a crash is wholly absent. The source must not change while it loads
        (it is read again to apply).
        """
        from segd import load_identity

        t0 = time.perf_counter()
        if on_conflict not in identity_api.MERGE_POLICIES:
            raise InvalidInput.at(
                "on_conflict", f"expected reject or merge, got {on_conflict!r}"
            )
        kinds = load_identity.source_kinds(self, source)
        ident = load_identity.LoadIdentity(kinds) if kinds else None
        if self._wal is not None:
            return self._load_events_logged(
                source, rows_per_chunk, progress, t0, ident, on_conflict
            )
        if ident is None:
            # One read: chunks are validated and staged against the load's own
            # dictionaries; the engine changes only in the commit below.
            stage, total = ingest.stage_events(source, rows_per_chunk, progress)
            with self._writing():
                appended = self._append_parts(stage.commit(self.store))
                if progress:
                    progress("index", total)
            return LoadReport(
                "events",
                appended,
                time.perf_counter() - t0,
                duplicate_events=total - appended,
            )
        # A load by link columns: a first pass collects and resolves its identities.
        columns = load_identity.check_schema(source, kinds)
        total = 0
        for done, _, _ in load_identity.chunks(
            self, source, rows_per_chunk, ident, adding=True, columns=columns
        ):
            total = done
        if progress:
            progress("validate", total)
        with self._writing():
            resolved = ident.resolve(self, on_conflict)
            self._apply_load_identity(load_identity.record(resolved))
            appended = self._apply_event_chunks(
                self._validated_chunks(source, rows_per_chunk, ident)
            )
            if progress:
                progress("index", total)
        return LoadReport(
            "events",
            appended,
            time.perf_counter() - t0,
            duplicate_events=total - appended,
        )

    def _validated_chunks(
        self, source: Source, rows_per_chunk: int, ident: Any = None
    ) -> Iterator[tuple[int, ingest.EventBatch]]:
        """(rows done, batch) of a load's apply pass; re-keyed by ``ident`` (a resolved
        ``LoadIdentity``) for a load by link columns."""
        if ident is not None:
            from segd import load_identity

            for done, batch, _ in load_identity.chunks(
                self, source, rows_per_chunk, ident, adding=False
            ):
                yield done, batch
            return
        for first, chunk in ingest.event_chunks(source, rows_per_chunk):
            yield first + chunk.num_rows, ingest.validate_chunk(chunk, first)

    def _apply_load_identity(self, rec: dict) -> None:
        """Inside the write lock: a load's merges and links (its commit record's
        identity), before its chunks."""
        for pair in identity_api.apply_resolved(self, rec):
            self._touched(pair, "merge")

    def _apply_logged_load(self, chunks: list, identity: dict | None) -> None:
        """Replay of a committed bulk load: its identity, then its chunks (re-keyed by
        the logged resolution for a load by link columns)."""
        batches: Iterable = (c.batch for c in chunks)
        if identity is not None:
            self._apply_load_identity(identity)
            ids = pa.array(identity["ids"], pa.string())
            batches = (
                replace(c.batch, customer_id=ids.take(pa.array(c.codes)))
                if c.codes is not None
                else c.batch
                for c in chunks
            )
        self._apply_event_chunks(((0, b) for b in batches), shrink=False)

    def _load_events_logged(
        self,
        source: Source,
        rows_per_chunk: int,
        progress: Callable[[str, int], None] | None,
        t0: float,
        ident: Any = None,
        on_conflict: str = "reject",
    ) -> LoadReport:
        from segd import load_identity

        wal = self._wal
        assert wal is not None, "a durable bulk load needs the write-ahead log"
        load_id = uuid.uuid4().hex
        total = 0
        with self._bulk:  # a snapshot cannot cut a load's chunks from its commit
            try:
                if ident is None:
                    validated: Iterable = (
                        (done, batch, None)
                        for done, batch in self._validated_chunks(
                            source, rows_per_chunk
                        )
                    )
                else:
                    validated = load_identity.chunks(
                        self, source, rows_per_chunk, ident, adding=True
                    )
                for done, batch, codes in validated:
                    wal.append(mut.encode(mut.LoadChunk(load_id, batch, codes)))
                    total = done
            except BaseException:
                with contextlib.suppress(SegdError):
                    wal.append(mut.encode(mut.LoadAborted(load_id)))
                raise
            if progress:
                progress("validate", total)
            with self._writing():
                record = None
                if ident is not None:
                    try:
                        resolved = ident.resolve(self, on_conflict)
                    except BaseException:
                        with contextlib.suppress(SegdError):
                            wal.append(mut.encode(mut.LoadAborted(load_id)))
                        raise
                    record = load_identity.record(resolved)
                seq = wal.append(mut.encode(mut.LoadCommitted(load_id, total, record)))
                if record is not None:
                    self._apply_load_identity(record)
                appended = self._apply_event_chunks(
                    self._validated_chunks(source, rows_per_chunk, ident), progress
                )
                if progress:
                    progress("index", total)
        self._wait_durable(seq)
        return LoadReport(
            "events",
            appended,
            time.perf_counter() - t0,
            duplicate_events=total - appended,
        )

    def append_events(
        self,
        batch: Source,
        *,
        idempotency_key: str | None = None,
        count_in_sequence: bool = False,
        source: str | None = None,
        source_name: str = "",
        force: bool = False,
        on_conflict: str = "reject",
    ) -> LoadReport:
        """Append live events (validated whole first; a bad batch changes nothing).

        `count_in_sequence` (the gRPC API sets it) adds the rows to
        ``events_sequence``; the report's ``sequence`` is then that of the last row. A
        repeated `idempotency_key` applies nothing and returns the first call's report.
        Rows whose ``event_id`` was seen before are dropped (``duplicate_events``).
        ``source`` is the content digest of the file this batch starts (``segctl
        load``): a digest loaded before raises ``AlreadyExists`` unless ``force``, and
        nothing is applied; otherwise it is recorded with the batch (``loaded_source``).

        Identity: a row names its contact by ``customer_id`` or, when that is NULL or
        absent, by link columns (``email``, ``phone``, ``card``, ``crm_id``,
        ``device_id``; identity, not event properties). Unknown link values link to the
        row's contact (a new one ``<kind>:<value>`` when nothing names it); rows whose
        id and links name different contacts raise ``IdentityConflict`` per row, or
        merge those contacts into the named one with ``on_conflict="merge"``.
        """
        t0 = time.perf_counter()
        dup = self._duplicate(idempotency_key, "events", t0)
        if dup is not None:
            return dup
        table = ingest.read_table(batch, "events")
        rows = table.num_rows
        if rows == 0:
            return LoadReport(
                "events", 0, time.perf_counter() - t0, sequence=self.events_sequence
            )
        table, ids = identity_api.split_links(self, table, "events")
        valid = ingest.validate_events(table)
        # Encode the record's tables before the lock: it then covers only the framing.
        encoded = (
            mut.prepare_events(valid) if self._wal is not None and ids is None else None
        )
        with self._writing():
            dup = self._duplicate(idempotency_key, "events", t0)
            if dup is None:
                if source is not None:
                    ingest.check_source(self.store, source, force=force)
                ident = None
                if ids is not None:
                    resolved = identity_api.resolve_batch(
                        self, ids, rows, "events", on_conflict
                    )
                    valid = identity_api.resolved_events(valid, resolved)
                    ident = identity_api.record(resolved)
                applied = ingest.count_new_events(self.store, valid)
                ack = None
                if idempotency_key is not None or count_in_sequence:
                    ack = {"rows": applied}
                    if count_in_sequence:
                        ack["sequence"] = self.events_sequence + applied
                tag = (
                    None if source is None else {"digest": source, "name": source_name}
                )
                m = mut.EventsAppended(
                    valid,
                    idempotency_key,
                    ack,
                    source=tag,
                    encoded=encoded,
                    identity=ident,
                )
                seq = self._commit(m)
                sequence = self.events_sequence
        if dup is not None:
            return dup
        self._wait_durable(seq)
        return LoadReport(
            "events",
            applied,
            time.perf_counter() - t0,
            sequence=sequence,
            duplicate_events=rows - applied,
        )

    def loaded_source(self, digest: str) -> LoadedSource | None:
        """The record of an event file loaded before under this content digest, if any."""
        with self._lock.read():
            return self.store.sources.get(digest)

    # -- identity (segd.identity; docs/data-model.md "Identity") ---------------------
    def link(self, customer_id: str, kind: str, value: str) -> None:
        """Link (kind, value) to a contact (value normalised; a merged id links to its
        survivor). Linked to it already: nothing happens; linked to another contact:
        ``IdentityConflict``; unknown contact: ``ContactNotFound``."""
        value = identity_api.normalized(self, kind, value)
        with self._writing():
            m = identity_api.check_link(self, customer_id, kind, value)
            seq = self._commit(m) if m is not None else 0
        self._wait_durable(seq)

    def unlink(self, customer_id: str, kind: str, value: str) -> None:
        """Remove a link of the contact (``InvalidInput`` when it has no such link)."""
        value = identity_api.normalized(self, kind, value)
        with self._writing():
            seq = self._commit(
                identity_api.check_unlink(self, customer_id, kind, value)
            )
        self._wait_durable(seq)

    def add_link_kind(self, kind: str) -> None:
        """A custom link kind (``loyalty_app_id``): its column then names contacts in
        ingest too. Like a schema it is not logged: declare it every time the engine
        starts (links of the kind survive restarts either way)."""
        with self._writing():
            self.store.identity.add_kind(kind)

    def links(self, customer_id: str) -> dict[str, list[str]]:
        """kind -> values linked to the contact (those of contacts merged into it
        too); the merged customer_ids under ``customer_id``."""
        with self._lock.read():
            return identity_api.links(self, customer_id)

    def resolve(self, kind: str, value: str) -> str | None:
        """The customer_id a link value (or, kind ``customer_id``, a possibly merged
        id) names now; None when nobody."""
        with self._lock.read():
            return identity_api.resolve_one(self, kind, value)

    def merge(self, survivor: str, merged: str) -> None:
        """Make `merged` part of `survivor`, at once: events, aggregates (recomputed),
        attributes (survivor wins, merged fills NULLs, tags unioned), links, static
        segment memberships and the current RFM row move to the survivor, and the
        merged customer_id resolves to it from now on. ``MergeError`` for a merge into
        itself, of an unknown id or of an id merged already."""
        from segd.identity import check_merge

        with self._writing():
            check_merge(self.store, survivor, merged)
            seq = self._commit(mut.ContactsMerged(survivor, merged))
        self._wait_durable(seq)

    def merge_many(self, pairs: Iterable[tuple[str, str]]) -> int:
        """``merge`` for many (survivor, merged) pairs, in order, as ONE record: one
        lock, one log write, one notification of the contacts changed. All or nothing:
        each pair is checked against the state the pairs before it leave (``b`` into
        ``a``, then ``a`` into ``c`` is a chain; merging ``b`` twice is an error), and a
        bad pair raises ``MergeError`` at ``pairs[i]`` with nothing merged. Returns the
        number of merges."""
        from segd.identity import check_merges

        pairs = list(pairs)
        with self._writing():
            checked = check_merges(self.store, pairs)
            seq = self._commit(mut.ContactsMergedMany(checked)) if checked else 0
        self._wait_durable(seq)
        return len(checked)

    def contact(self, customer_id: str, recent: int = 10) -> dict:
        """One contact: profile, links, aggregates and its `recent` latest events (each
        with ``from``: the contact it came from before a merge, or None)."""
        with self._lock.read():
            return identity_api.contact_card(self, customer_id, recent)

    # -- evaluation -------------------------------------------------------------------
    def prepare(
        self, query: Query, *, deadline: float | Budget | None = None
    ) -> Prepared:
        """Read a query once: DSL text (through a parse cache bounded by bytes) or an
        AST dict -> a validated canonical ``Prepared`` that every other method accepts
        and trusts. Over a limit of docs/segment-language.md ("Limits") it raises
        ``TooComplex`` before any expensive work; ``deadline`` (a ``time.monotonic()``
        value or a ``Budget`` that also knows about cancellation) stops a long parse.
        """
        return prepare(query, budget_of(deadline))

    def _compiler(
        self,
        now_s: float,
        lookup: Callable | None = None,
        live: Callable[[str], BitMap | None] | None = None,
    ) -> Compiler:
        return Compiler(
            self.store,
            now_s,
            lookup or self.segments.lookup,
            rfm=self._rfm_condition,
            live=live,
        )

    def _live_members_at(self, now_s: float) -> Callable[[str], BitMap | None] | None:
        """For a query asked at the engine clock: a dynamic segment's live members
        (a copy: the live set changes with the next write), which are exactly what
        inlining its plan would compute (the live segments' contract), for the cost of
        a copy. Called under the read lock, so no write or clock step is half done.
        None when the query is at another moment, the clock is unset, or
        ``live_refs`` is off."""
        live = self.live
        if not self.live_refs or live.clock is None or live.clock != now_s:
            return None
        held = live.members
        if not held:
            return None

        def members(name: str) -> BitMap | None:
            found = held.get(name)
            return None if found is None else found.copy()

        return members

    def _rfm_condition(self, ast: dict, key: str, path: str) -> Any:
        from segd.segments.rfm_node import rfm_node

        return rfm_node(ast, key, path, self.rfm_state)

    def segment(
        self,
        query: Query,
        now: datetime | float | None = None,
        *,
        deadline: float | None = None,
        cache: bool = True,
    ) -> SegmentResult:
        """Members of a segment (DSL text or AST) as of `now`.

        With `cache` (the default) a result computed for the same canonical query and
        `now` since the last write is reused; benchmarks pass ``cache=False``.
        """
        prepared = prepare(query, budget_of(deadline))
        deadline = _deadline_s(deadline)
        now_s = resolve_now(now)
        key = (prepared.key, now_s)
        cache = cache and self.result_cache_size > 0
        if cache and now is None:
            self._await_clock_step(prepared, now_s, deadline)
        with self._lock.read():
            if cache:
                hit = self._cached_evaluation(key, prepared.ast, now_s, deadline)
                if now is None:
                    self._refresh_ahead(prepared, now_s)
            else:
                hit = self._evaluate_warned(prepared.ast, now_s, deadline, None)
        bitmap, warnings = hit
        return SegmentResult(bitmap, self.store.contacts.external_ids, now_s, warnings)

    def _cached_evaluation(
        self, key: tuple, ast: dict, now_s: float, deadline: float | None
    ) -> tuple[BitMap, tuple[QueryWarning, ...]]:
        """The result of `key` from the cache, from an evaluation of it already under
        way, or evaluated here and cached. Called under the read lock.

        Dashboards and send pipelines ask the same segment again and again between
        writes, and requests without an explicit `now` share the current second: when a
        new second starts, every concurrent caller misses at once. Evaluating once and
        letting the others wait for it (single flight) keeps them from each spending a
        full evaluation on the same answer, which is what set the tail latency.
        """
        with self._results_lock:
            hit = self._results.get(key)
            if hit is not None:
                self._results.move_to_end(key)
                return hit
            found = self._inflight.get(key)
            leader = found is None
            flight = self._inflight[key] = _Flight() if found is None else found
        if not leader:
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if flight.done.wait(wait) and flight.result is not None:
                return flight.result
            # the leader failed (or our deadline came first): evaluate on our own
            return self._evaluate_warned(ast, now_s, deadline, None)
        try:
            hit = self._evaluate_warned(ast, now_s, deadline, None)
            flight.result = hit
            clock_free = not self._reads_segment_events(ast)
            with self._results_lock:
                self._results[key] = hit
                if clock_free:
                    self._clock_free.add(key)
                while len(self._results) > self.result_cache_size:
                    evicted, _ = self._results.popitem(last=False)
                    self._clock_free.discard(evicted)
            return hit
        finally:
            with self._results_lock:
                self._inflight.pop(key, None)
            flight.done.set()

    def _reads_segment_events(self, ast: dict) -> bool:
        """Whether `ast` reads segment events (``entered segment "x"``, a ``then no``
        on them), itself or through a referenced dynamic segment's definition (a static
        one's members are frozen): what a clock step can change. Under the read lock."""
        stack, seen = [ast], set()
        while stack:
            for node in walk(stack.pop()):
                name = node.get("segment")
                if isinstance(name, str):
                    if name in seen:
                        continue
                    seen.add(name)
                    try:
                        saved = self.segments.get(name)
                    except SegmentNotFound:
                        return True  # cannot tell: treat as changed
                    if saved.members is None:
                        stack.append(saved.ast)
                    continue
                then_no = node.get("then_no")
                if node.get("event") in SEGMENT_EVENT_TYPES or (
                    isinstance(then_no, dict)
                    and then_no.get("event") in SEGMENT_EVENT_TYPES
                ):
                    return True
        return False

    def _live_ref(self, prepared: Prepared) -> str | None:
        """The name, if the query is a reference to a dynamic segment the live segments
        keep (``{"segment": name}``): asked at the engine clock it is their members."""
        name = prepared.segment_ref
        if name is None or not self.live_refs:
            return None
        return name if name in self.live.members else None

    def _await_clock_step(
        self, prepared: Prepared, now_s: float, deadline: float | None
    ) -> None:
        """A saved segment asked on the server's clock in the first moments of a second,
        before the clock loop has stepped the engine clock to it: wait for that step
        (it is due now; ``segd.server.live_clock`` steps just after each whole second)
        rather than evaluate the segment in full, which holds the GIL for milliseconds
        and stalled every other call of the server once a second. After the step the
        answer is the live members (``_live_members_at``). Only when the clock is one
        second behind and was stepped within ``CLOCK_DRIVEN_S``; at most
        ``CLOCK_STEP_WAIT_S`` (and half the call's time left), then evaluated as
        before."""
        live = self.live
        clock = live.clock
        if clock is None or now_s != clock + 1.0 or not live.driven(CLOCK_DRIVEN_S):
            return
        if self._live_ref(prepared) is None:
            return
        wait = CLOCK_STEP_WAIT_S
        if deadline is not None:  # half of what is left: the evaluation may follow
            wait = max(0.0, min(wait, (deadline - time.monotonic()) / 2))
        live.await_clock(now_s, wait)

    def _refresh_ahead(self, prepared: Prepared, now_s: float) -> None:
        """Evaluate a query asked on the server's clock for the *next* second in the
        background, once this second is mostly gone, so the callers of the next second
        find it cached instead of all waiting for its evaluation (what set Count's tail
        latency with many clients). Only queries asked late in a second (hot ones) are
        refreshed, at most one evaluation per query and second; any write in between
        drops the result like every other cached one. The answer is exactly what the
        next second's callers would compute: an evaluation at `now_s + 1` reads the
        data as it is, and a later write clears it."""
        if time.time() - now_s < REFRESH_AHEAD_AFTER_S:
            return
        live = self.live
        if (
            live.clock == now_s
            and live.driven(CLOCK_DRIVEN_S)
            and self._live_ref(prepared) is not None
        ):
            return  # the next second is the live members, after the step (see above)
        key = (prepared.key, now_s + 1.0)
        with self._results_lock:
            if key in self._results or key in self._inflight or key in self._refreshing:
                return
            self._refreshing.add(key)
        worker = threading.Thread(
            target=self._refresh_one,
            args=(key, prepared.ast),
            name="segd-refresh-ahead",
            daemon=True,
        )
        worker.start()

    def _refresh_one(self, key: tuple, ast: dict) -> None:
        try:
            with self._lock.read():
                deadline = time.monotonic() + REFRESH_AHEAD_DEADLINE_S
                self._cached_evaluation(key, ast, key[1], deadline)
        except Exception:  # noqa: BLE001 - a caller of that second evaluates and reports
            pass
        finally:
            with self._results_lock:
                self._refreshing.discard(key)

    def _evaluate(
        self, ast: dict, now_s: float, deadline: float | None, profile: list | None
    ) -> BitMap:
        return self._evaluate_warned(ast, now_s, deadline, profile)[0]

    def _evaluate_warned(
        self, ast: dict, now_s: float, deadline: float | None, profile: list | None
    ) -> tuple[BitMap, tuple[QueryWarning, ...]]:
        """Members, and the warnings compiling the query raised (see QueryWarning)."""
        plan, warnings = self._plan(ast, now_s)
        ctx = Context(self.store, now_s, deadline, profile)
        return plan.run(ctx, None), warnings

    def _plan(self, ast: dict, now_s: float) -> tuple[Node, tuple[QueryWarning, ...]]:
        """The compiled plan of `ast` at `now_s` and its warnings, from the plan cache.

        Compiling resolves names, builds intervals and parses periods; for an answer of a
        few hundred contacts from value indexes that was most of a query's cost, and
        callers that turn the result cache off (``cache=False``, benchmarks) or ask
        with an explicit `now` ask the same plan again and again. A plan depends on the
        AST, `now` and the store, segments and RFM state: it is dropped with the results
        on every mutation (``_writing``), so it is exact by the same argument. Keyed by
        the AST object (the parse cache hands the same one back for the same text; the
        entry keeps it alive, so its id is not reused) and `now`. Plans only read
        shared state while they run (memos they keep are per index build or per
        moment), so concurrent readers may run one plan. A query at the engine clock
        reads referenced segments' live members (``_live_members_at``), which change
        only with writes and clock steps (``_writing`` too): its plan is kept apart.
        """
        live = self._live_members_at(now_s)
        key = (id(ast), now_s, live is not None)
        with self._results_lock:
            hit = self._plans.get(key)
            if hit is not None and hit[0] is ast:
                self._plans.move_to_end(key)
                return hit[1], hit[2]
        compiler = self._compiler(now_s, live=live)
        plan = compiler.compile(ast)
        warnings = tuple(compiler.warnings)
        with self._results_lock:
            self._plans[key] = (ast, plan, warnings)
            while len(self._plans) > PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        return plan, warnings

    def count(
        self,
        query: Query,
        now: datetime | float | None = None,
        *,
        deadline: float | None = None,
        cache: bool = True,
    ) -> int:
        return self.segment(query, now, deadline=deadline, cache=cache).count()

    def profile(
        self,
        query: Query,
        now: datetime | float | None = None,
        *,
        deadline: float | None = None,
    ) -> Profile:
        """The plan as the evaluator runs it: per step the result size, the candidates
        it looked at and milliseconds (see ``segd.explain.Profile``)."""
        prepared = prepare(query, budget_of(deadline))
        ast, text, deadline = prepared.ast, prepared.text, _deadline_s(deadline)
        now_s = resolve_now(now)
        steps: list = []
        t0 = time.perf_counter()
        with self._lock.read():
            bitmap = self._evaluate(ast, now_s, deadline, steps)
            contacts = self.store.n_contacts
        return Profile(
            query=text,
            count=len(bitmap),
            contacts=contacts,
            ms=round((time.perf_counter() - t0) * 1000, 3),
            steps=tuple(s for s in steps if s is not None),
        )

    def explain(
        self,
        query: Query,
        customer_id: str | None = None,
        now: datetime | float | None = None,
        *,
        deadline: float | None = None,
    ) -> Explanation:
        """The query's condition tree, evaluated once over the whole base: per node its
        members in the base and, with `customer_id`, that contact's verdict and evidence
        (see ``segd.explain.Explanation``). Unknown contact: ``ContactNotFound``."""
        prepared = prepare(query, budget_of(deadline))
        ast, text, deadline = prepared.ast, prepared.text, _deadline_s(deadline)
        now_s = resolve_now(now)
        t0 = time.perf_counter()
        with self._lock.read():
            cid = None
            if customer_id is not None:
                cid = self.store.contacts.cid_of(customer_id)
                if cid < 0:
                    raise ContactNotFound(customer_id)
            compiler = self._compiler(now_s)
            plan = compiler.compile(ast)
            ctx = Context(self.store, now_s, deadline)
            root, members = explain_tree(plan, ctx, cid)
            attributes = {} if cid is None else self._attributes_of(cid)
            contacts = self.store.n_contacts
        return Explanation(
            query=text,
            now=datetime.fromtimestamp(now_s, UTC),
            contacts=contacts,
            count=len(members),
            ms=round((time.perf_counter() - t0) * 1000, 3),
            root=root,
            customer_id=customer_id,
            member=None if cid is None else root.matched,
            attributes=attributes,
            warnings=tuple(compiler.warnings),
        )

    def _attributes_of(self, cid: int) -> dict[str, Any]:
        """One contact's attribute values; timestamps as aware UTC datetimes."""
        out = self.store.contacts.profile(cid)
        for name, value in out.items():
            col = self.store.contacts.column(name)
            if value is not None and getattr(col, "kind", "") == "timestamp":
                out[name] = datetime.fromtimestamp(value / 1000, UTC)
        return out

    # -- saved segments ---------------------------------------------------------------
    def create_segment(
        self,
        name: str,
        query: Query,
        *,
        static: bool = False,
        now: datetime | float | None = None,
        count: bool = False,
        deadline: float | Budget | None = None,
        respond: Respond | None = None,
    ) -> SavedSegment:
        """Save a segment; a static one is evaluated now and its members frozen.

        All or nothing: the segment is stored only after its query validated, compiled
        (names resolved, limits checked with references expanded), evaluated (static,
        or when ``count`` is asked) and ``respond(segment, count)`` returned — the gRPC
        layer builds its response there. Any error leaves the saved segments unchanged.
        ``count`` is None for a dynamic segment unless ``count`` is true.
        """
        self.segments.check_name(name)
        prepared = prepare(query, budget_of(deadline))
        self._warm_for_save(prepared.ast, static or count, now, deadline)
        with self._writing():
            seg = self.segments.new(name, prepared.ast, prepared.text, static, None)
            seg, seq = self._save(seg, now, count, _deadline_s(deadline), respond)
        self._wait_durable(seq)
        return seg

    def _warm_for_save(
        self,
        ast: dict,
        evaluated: bool,
        now: datetime | float | None,
        deadline: float | Budget | None,
    ) -> None:
        """Before a segment save takes the write lock: evaluate its query once under
        the read lock, at the moment the save will evaluate it (the engine clock for
        a dynamic segment followed live, `now` when the save evaluates it), and
        prime the sorted keys its clock steps read (``LiveSegments.prime_for``).

        The save compiles and evaluates the query under the write lock, and the first
        query that needs a value index, a category column's bitmaps or a log's index
        builds it where it runs: ~1 s at 1M contacts for the reference segment on a
        fresh server, while every reader waited. Built here, concurrently with
        queries, the save under the lock finds them ready. Nothing is stored: a query
        that fails here is not saved below either, and reports its error there (the
        same error, raised by the same compile or evaluation), so errors are left to
        the save."""
        clock = self.live.clock
        if clock is None and not evaluated:
            return
        try:
            with self._lock.read():
                at = clock if clock is not None and not evaluated else resolve_now(now)
                plan = self._compiler(at).compile(ast)
                plan.run(Context(self.store, at, _deadline_s(deadline)), None)
                if clock is not None:
                    self.live.prime_for(ast, plan if at == clock else None)
        except SegdError:
            return

    def _save(
        self,
        seg: SavedSegment,
        now: datetime | float | None,
        count: bool,
        deadline: float | None,
        respond: Respond | None,
    ) -> tuple[SavedSegment, int]:
        """Compile, evaluate and answer for ``seg`` as if stored, then commit it (under
        the write lock; returns the segment and the log sequence to wait for). Segments
        that expand ``seg`` are compiled too: its new query must keep them within the
        limits."""
        now_s = resolve_now(now)

        def lookup(name: str) -> tuple[dict, BitMap | None]:
            return (seg.ast, None) if name == seg.name else self.segments.lookup(name)

        # Compiled as it will be used, by name: a saved segment can always be asked for.
        plan = self._compiler(now_s, lookup).compile({"segment": seg.name})
        for user in self.segments.dependents(seg.name):
            self._compiler(now_s, lookup).compile({"segment": user})
        n = None
        if seg.static or count:
            members = plan.run(Context(self.store, now_s, deadline), None)
            n = len(members)
            if seg.static:
                seg = replace(seg, members=members)
        if respond is not None:
            respond(seg, n)
        return seg, self._commit(mut.SegmentPut(seg))

    def get_segment(self, name: str) -> SavedSegment:
        with self._lock.read():
            return self.segments.get(name)

    def list_segments(self) -> list[SavedSegment]:
        with self._lock.read():
            return self.segments.list()

    def update_segment(
        self,
        name: str,
        query: Query,
        *,
        version: int | None = None,
        now: datetime | float | None = None,
        count: bool = False,
        deadline: float | Budget | None = None,
        respond: Respond | None = None,
    ) -> SavedSegment:
        """Change a segment's query (a static one is re-frozen now); all or nothing,
        as ``create_segment``."""
        prepared = prepare(query, budget_of(deadline))
        self._warm_for_save(prepared.ast, count, now, deadline)
        with self._writing():
            seg = self.segments.updated(
                name, prepared.ast, prepared.text, version, None
            )
            seg, seq = self._save(seg, now, count, _deadline_s(deadline), respond)
        self._wait_durable(seq)
        return seg

    def delete_segment(self, name: str) -> None:
        with self._writing():
            self.segments.check_delete(name)
            seq = self._commit(mut.SegmentDeleted(name))
        self._wait_durable(seq)

    # -- admin --------------------------------------------------------------------------
    def warm(self) -> dict[str, float]:
        """Build now what event queries otherwise build on their first use: each event
        log's contact-major index and its code copies, and the per-category postings
        (``events.ATTRIBUTE_POSTINGS``). Returns seconds per event type.

        A query that finds a log's index missing (after a load, a restore or a restart)
        builds it under the log's lock, ~1-2 s at 1M contacts, and every query of that
        type queues behind it. A server calls this before it reports ready, so its
        first clients see warm latencies. Safe to call at any time, under the read lock
        (concurrent with queries); a log whose index is current costs nothing.
        """
        seconds: dict[str, float] = {}
        with self._lock.read():
            n_contacts = self.store.n_contacts
            for event_type, log in list(self.store.logs.items()):
                if log.n == 0:
                    continue
                t0 = time.perf_counter()
                log.contact_index(n_contacts)
                log.build_attribute_postings(self.store.catalog)
                seconds[event_type] = time.perf_counter() - t0
        return seconds

    def stats(self) -> dict:
        """Sizes and memory of the shard (see docs/engine-api.md)."""

        with self._lock.read():
            store = self.store
            memory = store.memory()
            n_events, n_contacts = store.n_events, store.contacts.live_count()
            index_bytes = {t: log.nbytes() for t, log in store.logs.items()}
            return {
                "contacts": n_contacts,
                "events": n_events,
                "items": len(store.catalog),
                "event_types": {t: log.n for t, log in store.logs.items()},
                "index_bytes": index_bytes,
                "memory_bytes": memory,
                "bytes_per_event": memory["events"] / n_events if n_events else 0.0,
                # The inverted indexes alone (postings + contact-major index); the rest
                # of bytes_per_event is the event columns themselves (cid, ts, codes).
                "index_bytes_per_event": sum(
                    log.index_nbytes() for log in store.logs.values()
                )
                / n_events
                if n_events
                else 0.0,
                "bytes_per_contact": (
                    memory["idmap"] + memory["attributes"] + memory["aggregates"]
                )
                / n_contacts
                if n_contacts
                else 0.0,
                "segments": len(self.segments),
                "uptime_s": time.time() - self._started,
                "version": __version__,
            }

    # -- exports (segd.export, docs/engine-api.md "Exports") -----------------------------
    def _result_of(
        self, query: Query | SegmentResult, now: Any, deadline: Any
    ) -> SegmentResult:
        if isinstance(query, SegmentResult):
            return query
        return self.segment(query, now, deadline=deadline)

    def export_batches(
        self,
        query: Query | SegmentResult,
        columns: Iterable[str] = (),
        *,
        now: datetime | float | None = None,
        chunk_rows: int = export_mod.DEFAULT_CHUNK_ROWS,
        deadline: float | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The members (a query, or a ``SegmentResult`` already evaluated) as record
        batches of ``chunk_rows``: ``customer_id`` and the profile ``columns``, in cid
        order, built one batch at a time. An unknown column raises ``UnknownColumn``
        here, before the segment is evaluated."""
        with self._lock.read():
            cols = export_mod.check_columns(self.store.contacts, columns)
        chunk_rows = export_mod.check_chunk_rows(chunk_rows)
        result = self._result_of(query, now, deadline)
        return export_mod.member_batches(
            self.store, result.bitmap, cols, chunk_rows, self._lock.read
        )

    def export_schema(self, columns: Iterable[str] = ()) -> pa.Schema:
        """The Arrow schema of an export with these profile columns (customer_id
        first); checks them (``UnknownColumn``, duplicates) without evaluating."""
        with self._lock.read():
            cols = export_mod.check_columns(self.store.contacts, columns)
            return export_mod.schema_of(self.store.contacts, cols)

    def export_stream(
        self,
        query: Query | SegmentResult,
        *,
        format: str = "csv",
        columns: Iterable[str] = (),
        now: datetime | float | None = None,
        chunk_rows: int = export_mod.DEFAULT_CHUNK_ROWS,
        deadline: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[bytes]:
        """The bytes of a CSV or Parquet file of the members with ``columns``, in
        pieces (at most 1 MiB), produced a batch at a time. Everything is checked
        before the first piece."""
        fmt = export_mod.check_format(format, export_mod.EXPORT_FORMATS)
        with self._lock.read():
            cols = export_mod.check_columns(self.store.contacts, columns)
            schema = export_mod.schema_of(self.store.contacts, cols)
            repeating = export_mod.repeating_columns(self.store.contacts, cols)
        batches = self.export_batches(
            query, cols, now=now, chunk_rows=chunk_rows, deadline=deadline
        )
        return export_mod.file_pieces(batches, fmt, schema, progress, repeating)

    def export(
        self,
        query: Query | SegmentResult,
        target: str | Path | Any,
        *,
        format: str | None = None,
        columns: Iterable[str] = (),
        now: datetime | float | None = None,
        chunk_rows: int = export_mod.DEFAULT_CHUNK_ROWS,
        deadline: float | None = None,
    ) -> export_mod.ExportReport:
        """Write the members with profile ``columns`` to ``target`` (a path or a binary
        file) as ``csv`` or ``parquet`` (default: from the path's extension, else csv),
        streaming: memory holds one batch of ``chunk_rows``, whatever the size."""
        t0 = time.perf_counter()
        fmt = format or export_mod.format_from_path(
            target, export_mod.EXPORT_FORMATS, "csv"
        )
        cols = tuple(columns) if not isinstance(columns, str) else columns
        result = None
        if not isinstance(query, SegmentResult):
            # Check the cheap things before evaluating.
            export_mod.check_format(fmt, export_mod.EXPORT_FORMATS)
            with self._lock.read():
                export_mod.check_columns(self.store.contacts, cols)
        result = self._result_of(query, now, deadline)
        return export_mod.write_report(
            lambda progress: self.export_stream(
                result,
                format=fmt,
                columns=cols,
                chunk_rows=chunk_rows,
                progress=progress,
            ),
            target,
            members=result.count(),
            format=fmt,
            columns=("customer_id", *cols),
            started=t0,
        )

    def retargeting_hashes(
        self,
        query: Query | SegmentResult,
        channel: str,
        *,
        identifiers: Iterable[str] = export_mod.IDENTIFIERS,
        now: datetime | float | None = None,
        chunk_rows: int = export_mod.DEFAULT_CHUNK_ROWS,
        deadline: float | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """For the members ``channel`` (email, sms, push) cannot reach — no valid
        address for it, or no consent (docs/data-model.md, "Channels and consent") —
        the SHA-256 of their normalised ``identifiers`` (``email_sha256``,
        ``phone_sha256``; NULL where a contact has none), in batches. Members with
        none of the identifiers are left out: there is nothing to match them by."""
        export_mod.check_channel(channel)
        ids = export_mod.check_identifiers(identifiers)
        chunk_rows = export_mod.check_chunk_rows(chunk_rows)
        result = self._result_of(query, now, deadline)
        return export_mod.hash_batches(
            self.store, result.bitmap, channel, ids, chunk_rows, self._lock.read
        )

    def retargeting_stream(
        self,
        query: Query | SegmentResult,
        channel: str,
        *,
        format: str = "lines",
        identifiers: Iterable[str] = export_mod.IDENTIFIERS,
        now: datetime | float | None = None,
        chunk_rows: int = export_mod.DEFAULT_CHUNK_ROWS,
        deadline: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[bytes]:
        """The retargeting file's bytes: ``lines`` (one hash per line) or ``csv`` (a
        header ``email_sha256,phone_sha256``, one row per contact)."""
        fmt = export_mod.check_format(format, export_mod.HASH_FORMATS)
        ids = export_mod.check_identifiers(identifiers)
        batches = self.retargeting_hashes(
            query,
            channel,
            identifiers=ids,
            now=now,
            chunk_rows=chunk_rows,
            deadline=deadline,
        )
        return export_mod.hash_pieces(batches, fmt, ids, progress)

    def export_retargeting(
        self,
        query: Query | SegmentResult,
        target: str | Path | Any,
        channel: str,
        *,
        format: str | None = None,
        identifiers: Iterable[str] = export_mod.IDENTIFIERS,
        now: datetime | float | None = None,
        chunk_rows: int = export_mod.DEFAULT_CHUNK_ROWS,
        deadline: float | None = None,
    ) -> export_mod.ExportReport:
        """Write the retargeting export of ``channel`` to ``target`` (a path or a binary
        file); the format from the extension (``.csv``; anything else: lines)."""
        t0 = time.perf_counter()
        fmt = format or export_mod.format_from_path(
            target, export_mod.HASH_FORMATS, "lines"
        )
        export_mod.check_format(fmt, export_mod.HASH_FORMATS)
        export_mod.check_channel(channel)
        ids = export_mod.check_identifiers(identifiers)
        result = self._result_of(query, now, deadline)
        return export_mod.write_report(
            lambda progress: self.retargeting_stream(
                result,
                channel,
                format=fmt,
                identifiers=ids,
                chunk_rows=chunk_rows,
                progress=progress,
            ),
            target,
            members=result.count(),
            format=fmt,
            columns=tuple(f"{i}_sha256" for i in ids),
            started=t0,
        )

    def customer_ids(self, cids: np.ndarray) -> list[str]:
        return self.store.contacts.external_ids(cids)

    # -- RFM (docs/rfm.md) --------------------------------------------------------------
    def _rfm_result(
        self,
        as_of: datetime | float | None,
        window_days: Any,
        scale: Any,
        method: Any,
        thresholds: Any,
        *,
        values: bool = True,
    ) -> rfm_mod.RfmResult:
        cfg = self.rfm_state.config
        window_days, scale, method, thresholds = rfm_mod.resolve_params(
            cfg, window_days, scale, method, thresholds
        )
        as_of_s = resolve_now(as_of)
        with self._lock.read():
            return rfm_mod.compute(
                self.store,
                as_of_s,
                window_days,
                scale,
                method,
                thresholds,
                cfg,
                self.rfm_state.workspace,
                values=values,
            )

    def rfm(
        self,
        as_of: datetime | float | None = None,
        window_days: int = 365,
        scale: int = 5,
        method: str = "quantile",
        thresholds: dict | None = None,
    ) -> pa.Table:
        """RFM of every contact with an order before `as_of` (pure: stores nothing).

        Columns ``customer_id, recency_days, frequency, monetary, r, f, m, code,
        segment``; the window columns are null for contacts without an order in the
        window. Named segments follow the configured rules (``rfm_set_config``).
        """
        result = self._rfm_result(as_of, window_days, scale, method, thresholds)
        with self._lock.read():
            return rfm_mod.result_table(result, self.store.contacts)

    def rfm_compute(
        self,
        as_of: datetime | float | None = None,
        window_days: int | None = None,
        scale: int | None = None,
        method: str | None = None,
        thresholds: dict | None = None,
        *,
        table: bool = True,
    ) -> pa.Table | None:
        """Compute RFM (parameters default to the configuration) and make it current.

        The segment language's ``rfm.*`` conditions then read this computation; the
        contacts whose code or segment changed since the previous one are recorded as
        transitions and handed to ``rfm_subscribe`` listeners as ``rfm_transition``
        events. `as_of` may not be earlier than the current computation's.

        Returns the per-contact table (as ``rfm``), or None with ``table=False``: a
        scheduled recompute, or one made only for ``rfm.*`` conditions, skips building
        a row per contact (a fifth of the cost at 1M contacts).
        """
        with self._rfm_compute_lock:
            latest = self.rfm_state.latest
            as_of_s = resolve_now(as_of)
            if latest is not None and as_of_s < latest.as_of:
                raise InvalidInput.at(
                    "as_of",
                    f"{_iso(as_of_s)} is before the current computation's as_of "
                    f"{_iso(latest.as_of)} (transitions are recorded in time order; "
                    "use rfm() for a look at the past)",
                )
            result = self._rfm_result(
                as_of_s, window_days, scale, method, thresholds, values=table
            )
            with self._writing():
                before = len(self.rfm_state.transitions)
                seq = self._commit(mut.RfmComputed(result.compact()))
                contacts = self.store.contacts
                out = rfm_mod.result_table(result, contacts) if table else None
                mask = np.zeros(len(self.rfm_state.transitions), dtype=bool)
                mask[before:] = True
                events = (
                    self.rfm_state.transitions_table(mask, contacts)
                    if self.rfm_state.listeners
                    else None
                )
            self._wait_durable(seq)
            for listener in list(self.rfm_state.listeners):
                listener(events)
            return out

    def rfm_matrix(
        self,
        as_of: datetime | float | None = None,
        by: str = "rf",
        *,
        window_days: int | None = None,
        scale: int | None = None,
        method: str | None = None,
        thresholds: dict | None = None,
    ) -> pa.Table:
        """Contacts per cell: ``by="rf"`` (r, f), ``"rfm"`` (r, f, m) or ``"segment"``,
        with ``count`` and ``share``. Without `as_of` (and parameters) the current
        computation; otherwise computed for the moment given (pure)."""
        if by not in ("rf", "rfm", "segment"):
            raise InvalidInput.at("by", f"expected rf, rfm or segment, got {by!r}")
        params = (window_days, scale, method, thresholds)
        latest = self.rfm_state.latest
        if as_of is None and latest is not None and all(p is None for p in params):
            result = latest
        else:
            result = self._rfm_result(as_of, *params, values=False)
        return rfm_mod.matrix_table(result, by)

    def rfm_transitions(
        self,
        since: datetime | float | str | None = None,
        until: datetime | float | str | None = None,
        to: str | None = None,
        from_: str | None = None,
    ) -> pa.Table:
        """Recorded transitions ``customer_id, at, from_code, to_code, from_segment,
        to_segment`` with `since` <= at < `until`; `to` (a segment or a code) keeps the
        rows that entered it, `from_` those that came from it."""
        since_s = None if since is None else _moment(since, "since")
        until_s = None if until is None else _moment(until, "until")
        with self._lock.read():
            mask = self.rfm_state.transitions_mask(since_s, until_s, to, from_)
            return self.rfm_state.transitions_table(mask, self.store.contacts)

    def rfm_history(
        self, since: str | None = None, until: str | None = None
    ) -> pa.Table:
        """Daily counts per named segment and per code (``day, kind, name, count``):
        the last computation of each UTC day."""
        with self._lock.read():
            return self.rfm_state.history_table(since, until)

    def rfm_config(self) -> dict:
        """The RFM configuration as a dict (see docs/rfm.md)."""
        return self.rfm_state.config.to_dict()

    def rfm_set_config(self, config: dict) -> dict:
        """Change some or all settings; rules are validated (gaps and rules that can
        never match are errors, ``RfmRulesError``). Returns the rules report
        (``overlaps``: where an earlier rule wins over a later one)."""
        with self._writing():
            new = rfm_mod.parse_config(config, self.rfm_state.config)
            seq = self._commit(mut.RfmConfigSet(new.to_dict()))
        self._wait_durable(seq)
        return rfm_mod.rules_report(new)

    def rfm_status(self) -> dict:
        """The current computation: as_of, parameters, sizes and counts per segment."""
        latest = self.rfm_state.latest
        if latest is None:
            return {"computed": False, "transitions": len(self.rfm_state.transitions)}
        seg = latest.histograms()[1]  # contacts per segment id (computed once)
        return {
            "computed": True,
            "as_of": _iso(latest.as_of),
            "as_of_s": latest.as_of,
            "window_days": latest.window_days,
            "scale": latest.scale,
            "method": latest.method,
            "contacts": int(np.count_nonzero(latest.orders_all)),
            "scored": latest.scored(),
            "segments": {s: int(seg[i]) for i, s in enumerate(latest.segments)},
            "transitions": len(self.rfm_state.transitions),
        }

    def rfm_subscribe(self, listener: Callable[[pa.Table], None]) -> Callable[[], None]:
        """Receive each ``rfm_compute``'s transitions (an ``rfm_transition`` table, the
        columns of ``rfm_transitions``); returns the unsubscribe function."""
        return self.rfm_state.subscribe(listener)

    # -- recommendations (segd.recs, docs/recommendations.md) ----------------------------
    def recommend(
        self,
        kind: str,
        *,
        item_ids: list[str] | None = None,
        customer_id: str | None = None,
        category: str | None = None,
        phrase: str | None = None,
        filters: Any = None,
        limit: int = 10,
        exclude_bought: bool = True,
        event: str = "order",
    ) -> list[tuple[str, float]]:
        """``(item_id, score)`` best first: `kind` is related, alternatives, popular,
        personal or search (see docs/recommendations.md). In-stock items only; items
        `customer_id` bought are left out unless repeatable or `exclude_bought` is False.
        `filters` are event-filter conditions on catalog fields (``colour = "red",
        price < 5000``); `event` picks what popularity counts (order, add_to_cart, view)."""
        return self.recs.recommend(
            kind, item_ids=item_ids, customer_id=customer_id, category=category,
            phrase=phrase, filters=filters, limit=limit, exclude_bought=exclude_bought,
            event=event,
        )  # fmt: skip

    def recommend_batch(
        self, kind: str, customer_ids: list[str], **kwargs: Any
    ) -> list[list[tuple[str, float]]]:
        """``recommend`` for many contacts (a mass send), aligned with `customer_ids`;
        an unknown id gets the answer for a contact without history."""
        return self.recs.recommend_batch(kind, customer_ids, **kwargs)

    def rebuild_recommendations(self, config: dict | None = None) -> dict:
        """Build the recommendation model aside and swap it in (lookups keep the old one
        meanwhile); its stats. `config` changes settings (segd.recs.RecsConfig)."""
        return self.recs.rebuild(config)

    def describe_items(self, item_ids: list[str]) -> list[dict]:
        """Name, category and current price of items (for showing recommendations)."""
        return self.recs.describe(item_ids)

    def recommendation_stats(self) -> dict:
        """The current model's size, age, build time and settings."""
        return self.recs.stats()


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _moment(value: datetime | float | str, where: str) -> float:
    if isinstance(value, str):
        from segd.timeutil import parse_instant_s

        return parse_instant_s(value, where)
    try:
        return resolve_now(value)
    except InvalidInput as exc:
        raise InvalidInput.at(where, str(exc)) from None
