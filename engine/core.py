"""``Engine``: one in-memory shard — the store, the saved segments and the evaluator.

Every mutation goes through ``segd.ingest`` under the write lock (one path, so a
write-ahead log can sit in front of it); every read holds the read lock, and the kernels it
calls release the GIL, so reads run on all cores. See docs/engine-api.md.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
from pyroaring import BitMap

from segd import ingest
from segd._version import __version__
from segd.errors import ContactNotFound, InvalidInput
from segd.results import SegmentResult
from segd.rwlock import RWLock
from segd.segments.ast import canonical_key
from segd.segments.compile import Compiler
from segd.segments.context import Context
from segd.segments.registry import SavedSegment, SegmentRegistry
from segd.store import Store
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
            bitmap = None
            if cache:
                with self._results_lock:
                    bitmap = self._results.get(key)
                    if bitmap is not None:
                        self._results.move_to_end(key)
            if bitmap is None:
                bitmap = self._evaluate(ast, now_s, deadline, None)
            if cache:
                with self._results_lock:
                    # Dashboards and send pipelines ask the same segment again and again
                    # between writes; the same (query, now) needs no second evaluation.
                    self._results[key] = bitmap
                    while len(self._results) > self.result_cache_size:
                        self._results.popitem(last=False)
        return SegmentResult(bitmap, self.store.contacts.external_ids, now_s)

    def _evaluate(
        self, ast: dict, now_s: float, deadline: float | None, profile: list | None
    ) -> BitMap:
        plan = self._compiler(now_s).compile(ast)
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
        ast, text = _to_ast(query)
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
        ast, text = _to_ast(query)
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
            return self.segments.create(name, ast, text, static, members)

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
            return self.segments.update(name, ast, text, version, members)

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
