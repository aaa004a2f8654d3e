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
import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from segd import ingest
from segd import mutations as mut
from segd._version import __version__
from segd.durability import IdempotencyTable
from segd.errors import ContactNotFound, FailedPrecondition, InvalidInput, SegdError
from segd.explain import Explanation, Profile, explain_tree
from segd.results import QueryWarning, SegmentResult
from segd.rwlock import RWLock
from segd.segments.ast import canonical_key
from segd.segments.compile import Compiler
from segd.segments.context import Context
from segd.segments.registry import SavedSegment, SegmentRegistry
from segd.store import LoadedSource, Store
from segd.timeutil import resolve_now

Query = str | dict
RESULT_CACHE_SIZE = 64  # evaluated segments kept until the next write
Source: TypeAlias = str | Path | pa.Table | pa.RecordBatch | list


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


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str) -> tuple[dict, str]:
    """Parsing is pure, and services send the same few segment texts again and again:
    a cache takes the parse off the hot path. The AST returned is shared: never mutate."""
    from segd.segments import dsl

    ast = dsl.parse(text)
    return ast, dsl.format(ast)


def _to_ast(query: Query) -> tuple[dict, str]:
    """(canonical AST, DSL text) of DSL text or an AST dict."""
    from segd.segments import dsl
    from segd.segments.ast import validate

    if isinstance(query, str):
        return _parse_cached(query)
    if isinstance(query, dict):
        ast = validate(query)
    else:
        raise InvalidInput.at(
            "query", f"expected DSL text or an AST dict, got {type(query).__name__}"
        )
    return ast, dsl.format(ast)


class Engine:
    """One shard of segd (see module docstring and docs/engine-api.md)."""

    def __init__(self, *, result_cache_size: int = RESULT_CACHE_SIZE) -> None:
        """`result_cache_size`: segment results kept between writes (0 turns it off)."""
        self.store = Store()
        self.result_cache_size = result_cache_size
        self.segments = SegmentRegistry()
        self._lock = RWLock()
        self._started = time.time()
        # Results of recent evaluations, valid until the next mutation (see segment()).
        self._results: collections.OrderedDict[
            tuple, tuple[BitMap, tuple[QueryWarning, ...]]
        ] = collections.OrderedDict()
        self._results_lock = threading.Lock()
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
        # Write snapshots from a forked child (None: segd.snapshot's default, True where
        # fork exists). The gRPC server sets False: forking a process with gRPC's
        # threads running crashes the child.
        self.snapshot_background: bool | None = None

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
        if isinstance(m, mut.EventsAppended):
            applied = ingest.apply_events(store, m.batch)
            if m.source is not None:
                ingest.record_source(
                    store, m.source["digest"], m.source.get("name", ""), applied
                )
            if m.ack is not None and m.ack.get("sequence") is not None:
                self.events_sequence = max(self.events_sequence, m.ack["sequence"])
        elif isinstance(m, mut.AttributesUpserted):
            if m.target == "contacts":
                ingest.apply_attributes(store.contacts, m.batch, store.contacts.ensure)
                store.sync_sizes()
            else:
                ingest.apply_attributes(store.catalog, m.batch, store.catalog.ensure)
                store.catalog.touch()
        elif isinstance(m, mut.SegmentPut):
            self.segments.put(m.segment)
        elif isinstance(m, mut.SegmentDeleted):
            self.segments.remove(m.name)
        else:
            raise TypeError(f"_apply cannot apply {type(m).__name__}")
        key = getattr(m, "idempotency_key", None)
        if key is not None:
            self.idempotency.put(key, getattr(m, "ack", None) or {}, self._last_seq())

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
    ) -> int:
        """Apply validated chunks of one bulk load: encode each, then append each type
        once (one sort per type, not a merge per chunk). `batches`: (rows done, batch).
        Returns the rows appended (rows whose event_id was seen before are dropped)."""
        parts: dict[str, list] = {}
        appended = 0
        for done, batch in batches:
            for name, rows in ingest.encode_events(self.store, batch).items():
                parts.setdefault(name, []).append(rows)
                appended += len(rows.cids)
            if progress:
                progress("encode", done)
        for name in list(parts):
            ingest.append_rows(self.store, name, ingest.concat_rows(parts.pop(name)))
        for log in self.store.logs.values():
            log.shrink_to_fit()
        return appended

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The write lock; on the way out every cached result is dropped."""
        with self._lock.write():
            try:
                yield
            finally:
                with self._results_lock:
                    self._results.clear()

    # -- ingest -----------------------------------------------------------------------
    def load_contacts(
        self, source: Source, *, schema: dict[str, str] | None = None
    ) -> LoadReport:
        """Add or update contacts from CSV / Parquet / a table (`schema`: column -> kind)."""
        return self.upsert_contacts(source, schema=schema)

    def upsert_contacts(
        self,
        source: Source,
        *,
        schema: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> LoadReport:
        """Add or update contacts. A repeated `idempotency_key` applies nothing and
        returns the first call's report (``duplicate=True``)."""
        t0 = time.perf_counter()
        dup = self._duplicate(idempotency_key, "contacts", t0)
        if dup is not None:
            return dup
        table = ingest.read_table(source, "contacts", schema)
        batch = ingest.validate_attributes(
            table, self.store.contacts, "contacts", "customer_id", schema
        )
        return self._upsert("contacts", batch, table.num_rows, idempotency_key, t0)

    def _upsert(
        self,
        target: str,
        batch: ingest.AttributeBatch,
        rows: int,
        key: str | None,
        t0: float,
    ) -> LoadReport:
        with self._writing():
            dup = self._duplicate(key, target, t0) if key is not None else None
            if dup is None:
                ack = {"rows": rows} if key is not None else None
                seq = self._commit(mut.AttributesUpserted(target, batch, key, ack))
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
    ) -> LoadReport:
        """Bulk-load events: all or nothing, in bounded memory, one sort per type.

        The source is read twice in chunks (Parquet by row group): first every chunk is
        validated, then chunks are encoded to compact arrays per type, and each type is
        appended once — so a file whose rows are not in time order costs one sort, not a
        merge per chunk. `progress(phase, rows_done)` is called after each chunk.

        A durable engine logs each validated chunk as a record (outside the write
        lock), then a commit record inside it; recovery applies a load's chunks only
        when it finds the commit, so a load cut short by a crash is wholly absent. The
        source must not change while it loads (it is read again to apply).
        """
        t0 = time.perf_counter()
        if self._wal is not None:
            return self._load_events_logged(source, rows_per_chunk, progress, t0)
        total = ingest.check_events(source, rows_per_chunk)
        if progress:
            progress("validate", total)
        with self._writing():
            appended = self._apply_event_chunks(
                self._validated_chunks(source, rows_per_chunk)
            )
            if progress:
                progress("index", total)
        return LoadReport(
            "events",
            appended,
            time.perf_counter() - t0,
            duplicate_events=total - appended,
        )

    @staticmethod
    def _validated_chunks(
        source: Source, rows_per_chunk: int
    ) -> Iterator[tuple[int, ingest.EventBatch]]:
        for first, chunk in ingest.event_chunks(source, rows_per_chunk):
            yield first + chunk.num_rows, ingest.validate_chunk(chunk, first)

    def _load_events_logged(
        self,
        source: Source,
        rows_per_chunk: int,
        progress: Callable[[str, int], None] | None,
        t0: float,
    ) -> LoadReport:
        wal = self._wal
        assert wal is not None, "a durable bulk load needs the write-ahead log"
        load_id = uuid.uuid4().hex
        total = 0
        with self._bulk:  # a snapshot cannot cut a load's chunks from its commit
            try:
                for done, batch in self._validated_chunks(source, rows_per_chunk):
                    wal.append(mut.encode(mut.LoadChunk(load_id, batch)))
                    total = done
            except BaseException:
                with contextlib.suppress(SegdError):
                    wal.append(mut.encode(mut.LoadAborted(load_id)))
                raise
            if progress:
                progress("validate", total)
            with self._writing():
                seq = wal.append(mut.encode(mut.LoadCommitted(load_id, total)))
                appended = self._apply_event_chunks(
                    self._validated_chunks(source, rows_per_chunk), progress
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
    ) -> LoadReport:
        """Append live events (validated whole first; a bad batch changes nothing).

        `count_in_sequence` (the gRPC API sets it) adds the rows to
        ``events_sequence``; the report's ``sequence`` is then that of the last row. A
        repeated `idempotency_key` applies nothing and returns the first call's report.
        Rows whose ``event_id`` was seen before are dropped (``duplicate_events``).
        ``source`` is the content digest of the file this batch starts (``segctl
        load``): a digest loaded before raises ``AlreadyExists`` unless ``force``, and
        nothing is applied; otherwise it is recorded with the batch (``loaded_source``).
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
        valid = ingest.validate_events(table)
        with self._writing():
            dup = self._duplicate(idempotency_key, "events", t0)
            if dup is None:
                if source is not None:
                    ingest.check_source(self.store, source, force=force)
                applied = ingest.count_new_events(self.store, valid)
                ack = None
                if idempotency_key is not None or count_in_sequence:
                    ack = {"rows": applied}
                    if count_in_sequence:
                        ack["sequence"] = self.events_sequence + applied
                tag = (
                    None if source is None else {"digest": source, "name": source_name}
                )
                m = mut.EventsAppended(valid, idempotency_key, ack, tag)
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

    # -- evaluation -------------------------------------------------------------------
    def _compiler(self, now_s: float) -> Compiler:
        return Compiler(self.store, now_s, self.segments.lookup)

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
        ast, _ = _to_ast(query)
        now_s = resolve_now(now)
        key = (canonical_key(ast), now_s)
        cache = cache and self.result_cache_size > 0
        with self._lock.read():
            hit = None
            if cache:
                with self._results_lock:
                    hit = self._results.get(key)
                    if hit is not None:
                        self._results.move_to_end(key)
            if hit is None:
                hit = self._evaluate_warned(ast, now_s, deadline, None)
            if cache:
                with self._results_lock:
                    # Dashboards and send pipelines ask the same segment again and again
                    # between writes; the same (query, now) needs no second evaluation.
                    self._results[key] = hit
                    while len(self._results) > self.result_cache_size:
                        self._results.popitem(last=False)
        bitmap, warnings = hit
        return SegmentResult(bitmap, self.store.contacts.external_ids, now_s, warnings)

    def _evaluate(
        self, ast: dict, now_s: float, deadline: float | None, profile: list | None
    ) -> BitMap:
        return self._evaluate_warned(ast, now_s, deadline, profile)[0]

    def _evaluate_warned(
        self, ast: dict, now_s: float, deadline: float | None, profile: list | None
    ) -> tuple[BitMap, tuple[QueryWarning, ...]]:
        """Members, and the warnings compiling the query raised (see QueryWarning)."""
        compiler = self._compiler(now_s)
        plan = compiler.compile(ast)
        ctx = Context(self.store, now_s, deadline, profile)
        return plan.run(ctx, None), tuple(compiler.warnings)

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
        ast, text = _to_ast(query)
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
        ast, text = _to_ast(query)
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
    ) -> SavedSegment:
        """Save a segment; a static one is evaluated now and its members frozen."""
        ast, text = _to_ast(query)
        with self._writing():
            self.segments.check_name(name)
            self.segments.check_references(name, ast)
            members = None
            if static:
                members = self._evaluate(ast, resolve_now(now), None, None)
            else:
                self._compiler(resolve_now(now)).compile(ast)  # unknown names fail now
            seg = self.segments.new(name, ast, text, static, members)
            seq = self._commit(mut.SegmentPut(seg))
        self._wait_durable(seq)
        return seg

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
    ) -> SavedSegment:
        """Change a segment's query (a static one is re-frozen now)."""
        ast, text = _to_ast(query)
        with self._writing():
            old = self.segments.get(name)
            self.segments.check_references(name, ast)
            members = None
            if old.static:
                members = self._evaluate(ast, resolve_now(now), None, None)
            else:
                self._compiler(resolve_now(now)).compile(ast)
            seg = self.segments.updated(name, ast, text, version, members)
            seq = self._commit(mut.SegmentPut(seg))
        self._wait_durable(seq)
        return seg

    def delete_segment(self, name: str) -> None:
        with self._writing():
            self.segments.check_delete(name)
            seq = self._commit(mut.SegmentDeleted(name))
        self._wait_durable(seq)

    # -- admin --------------------------------------------------------------------------
    def stats(self) -> dict:
        """Sizes and memory of the shard (see docs/engine-api.md)."""

        with self._lock.read():
            store = self.store
            memory = store.memory()
            n_events, n_contacts = store.n_events, store.n_contacts
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

    def customer_ids(self, cids: np.ndarray) -> list[str]:
        return self.store.contacts.external_ids(cids)
