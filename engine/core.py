"""``Engine``: one in-memory shard — the store, the saved segments and the evaluator.

Every mutation goes through ``segd.ingest`` under the write lock (one path, so a
write-ahead log can sit in front of it); every read holds the read lock, and the kernels it
calls release the GIL, so reads run on all cores. See docs/engine-api.md.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from segd import ingest
from segd._version import __version__
from segd.aggregates import VISIT_EVENTS
from segd.errors import ContactNotFound
from segd.results import SegmentResult
from segd.rwlock import RWLock
from segd.segments.compile import Compiler
from segd.segments.context import Context
from segd.segments.limits import Budget, budget_of
from segd.segments.query import Prepared, prepare
from segd.segments.registry import SavedSegment, SegmentRegistry
from segd.store import Store
from segd.timeutil import resolve_now

Query = str | dict | Prepared
# Called with a segment about to be saved and its count (None when not evaluated);
# raising stops the save (see Engine.create_segment).
Respond = Callable[[SavedSegment, "int | None"], None]
RESULT_CACHE_SIZE = 64  # evaluated segments kept until the next write
Source = str | Path | pa.Table | pa.RecordBatch | list


@dataclass(frozen=True)
class LoadReport:
    """What one load / append / upsert did."""

    kind: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _deadline_s(deadline: float | Budget | None) -> float | None:
    return deadline.deadline if isinstance(deadline, Budget) else deadline


class Engine:
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
        self.segments = SegmentRegistry()
        self._lock = RWLock()
        self._started = time.time()
        # Results of recent evaluations, valid until the next mutation (see segment()).
        self._results: collections.OrderedDict[tuple, BitMap] = (
            collections.OrderedDict()
        )
        self._results_lock = threading.Lock()

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
        self, source: Source, *, schema: dict[str, str] | None = None
    ) -> LoadReport:
        t0 = time.perf_counter()
        table = ingest.read_table(source, "contacts", schema)
        batch = ingest.validate_attributes(
            table, self.store.contacts, "contacts", "customer_id", schema
        )
        with self._writing():
            ingest.apply_attributes(
                self.store.contacts, batch, self.store.contacts.ensure
            )
            self.store.sync_sizes()
        return LoadReport("contacts", table.num_rows, time.perf_counter() - t0)

    def upsert_contact(self, customer_id: str, **attributes: Any) -> None:
        """Set some attributes of one contact (creating it if new)."""
        self.upsert_contacts([{"customer_id": customer_id, **attributes}])

    def load_items(self, source: Source) -> LoadReport:
        return self.upsert_items(source)

    def upsert_items(self, source: Source) -> LoadReport:
        t0 = time.perf_counter()
        table = ingest.read_table(source, "items")
        batch = ingest.validate_attributes(
            table, self.store.catalog, "items", "item_id"
        )
        with self._writing():
            ingest.apply_attributes(
                self.store.catalog, batch, self.store.catalog.ensure
            )
            self.store.catalog.touch()
        return LoadReport("items", table.num_rows, time.perf_counter() - t0)

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
        """
        t0 = time.perf_counter()
        total = ingest.check_events(source, rows_per_chunk)
        if progress:
            progress("validate", total)
        parts: dict[str, list] = {}
        with self._writing():
            for first, chunk in ingest.event_chunks(source, rows_per_chunk):
                batch = ingest.validate_chunk(chunk, first)
                for name, rows in ingest.encode_events(self.store, batch).items():
                    parts.setdefault(name, []).append(rows)
                if progress:
                    progress("encode", first + chunk.num_rows)
            for name in list(parts):
                ingest.append_rows(
                    self.store, name, ingest.concat_rows(parts.pop(name))
                )
            for log in self.store.logs.values():
                log.shrink_to_fit()
            if progress:
                progress("index", total)
        return LoadReport("events", total, time.perf_counter() - t0)

    def append_events(self, batch: Source) -> LoadReport:
        """Append live events (validated whole first; a bad batch changes nothing)."""
        t0 = time.perf_counter()
        table = ingest.read_table(batch, "events")
        if table.num_rows == 0:
            return LoadReport("events", 0, time.perf_counter() - t0)
        valid = ingest.validate_events(table)
        with self._writing():
            ingest.apply_events(self.store, valid)
        return LoadReport("events", table.num_rows, time.perf_counter() - t0)

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

    def _compiler(self, now_s: float, lookup: Callable | None = None) -> Compiler:
        return Compiler(self.store, now_s, lookup or self.segments.lookup)

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
        with self._lock.read():
            bitmap = None
            if cache:
                with self._results_lock:
                    bitmap = self._results.get(key)
                    if bitmap is not None:
                        self._results.move_to_end(key)
            if bitmap is None:
                bitmap = self._evaluate(prepared.ast, now_s, deadline, None)
            if cache:
                with self._results_lock:
                    # Dashboards and send pipelines ask the same segment again and again
                    # between writes; the same (query, now) needs no second evaluation.
                    self._results[key] = bitmap
                    while len(self._results) > self.result_cache_size:
                        self._results.popitem(last=False)
        return SegmentResult(bitmap, self.store.contacts.external_ids, now_s)

    def _evaluate(
        self,
        ast: dict,
        now_s: float,
        deadline: float | None,
        profile: list | None,
        lookup: Callable | None = None,
    ) -> BitMap:
        plan = self._compiler(now_s, lookup).compile(ast)
        ctx = Context(self.store, now_s, deadline, profile)
        return plan.run(ctx, None)

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
    ) -> dict:
        """The plan as run: per condition the cardinality, candidates and milliseconds."""
        prepared = prepare(query, budget_of(deadline))
        ast, text, deadline = prepared.ast, prepared.text, _deadline_s(deadline)
        now_s = resolve_now(now)
        steps: list[dict] = []
        t0 = time.perf_counter()
        with self._lock.read():
            bitmap = self._evaluate(ast, now_s, deadline, steps)
        return {
            "query": text,
            "count": len(bitmap),
            "contacts": self.store.n_contacts,
            "ms": round((time.perf_counter() - t0) * 1000, 3),
            "steps": steps,
        }

    def explain(
        self,
        query: Query,
        customer_id: str,
        now: datetime | float | None = None,
        *,
        deadline: float | None = None,
    ) -> dict:
        """Why one contact is (or is not) in a segment: a tree of conditions with evidence."""
        prepared = prepare(query, budget_of(deadline))
        ast, text, deadline = prepared.ast, prepared.text, _deadline_s(deadline)
        now_s = resolve_now(now)
        with self._lock.read():
            cid = self.store.contacts.cid_of(customer_id)
            if cid < 0:
                raise ContactNotFound(customer_id)
            plan = self._compiler(now_s).compile(ast)
            ctx = Context(self.store, now_s, deadline)
            tree = plan.describe(ctx, cid)
            profile = self.store.contacts.profile(cid)
        return {
            "query": text,
            "customer_id": customer_id,
            "member": tree["holds"],
            "now": datetime.fromtimestamp(now_s, UTC).isoformat(),
            "profile": profile,
            "tree": tree,
        }

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
        with self._writing():
            seg = self.segments.new(name, prepared.ast, prepared.text, static)
            return self._save(seg, now, count, _deadline_s(deadline), respond)

    def _save(
        self,
        seg: SavedSegment,
        now: datetime | float | None,
        count: bool,
        deadline: float | None,
        respond: Respond | None,
    ) -> SavedSegment:
        """Compile, evaluate and answer for ``seg`` as if stored, then store it (under
        the write lock). Segments that expand ``seg`` are compiled too: its new query
        must keep them within the limits."""
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
        return self.segments.put(seg)

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
        with self._writing():
            seg = self.segments.changed(name, prepared.ast, prepared.text, version)
            return self._save(seg, now, count, _deadline_s(deadline), respond)

    def delete_segment(self, name: str) -> None:
        with self._writing():
            self.segments.delete(name)

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
