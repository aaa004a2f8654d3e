"""segd adapter: ``Engine.load_*`` from the Parquet files, queries as DSL text.

Each ``count`` parses the DSL text and evaluates it, as a client request would (DuckDB's
side parses and plans its SQL on every call too). ``now`` is the dataset's ``now``.
"""

from __future__ import annotations

import gc
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

import segd
from segd import Engine
from segd.bench.queries import RFM_WINDOW_DAYS

label = "segd " + segd.__version__


class Adapter:
    """``load`` / ``count`` / ``members`` over one ``segd.Engine``."""

    label = label

    def __init__(self, threads: int | None = None) -> None:
        self.eng = Engine()
        self.now = None
        self.queries: dict[str, str] = {}

    def load(self, paths: dict[str, str], progress=None) -> dict:
        """Items, contacts, then events (the order a fresh shard is filled in)."""
        seconds = {}
        steps = (
            ("items", self.eng.load_items),
            ("contacts", self.eng.load_contacts),
            ("events", self.eng.load_events),
        )
        for i, (table, load) in enumerate(steps):
            if progress is not None:
                progress(f"segd: loading {table}", i, len(steps))
            t0 = time.perf_counter()
            load(paths[table])
            seconds[table] = time.perf_counter() - t0
        # Arrow buffers of the Parquet reads are garbage now; give them back so the RSS
        # delta measures what the engine holds.
        gc.collect()
        pa.default_memory_pool().release_unused()
        stats = self.eng.stats()
        return {
            "seconds": seconds,
            "events": stats["events"],
            "contacts": stats["contacts"],
        }

    def prepare(self, queries, now) -> None:
        """Remember the DSL of each query, create the saved segments they use and set
        the engine clock to `now`, as a server does (it advances the clock every
        second): the saved dynamic segments are then kept live, and a query asked at
        the clock reads a referenced segment's members instead of re-running its
        definition (the SQL engines recompute theirs as CTEs on every call)."""
        self.now = now
        self.queries = {q.name: q.dsl for q in queries}
        self.rfm_queries = {q.name for q in queries if q.rfm_as_of_now}
        existing = {s.name for s in self.eng.list_segments()}
        for q in queries:
            for name, dsl in q.segments:
                if name not in existing:
                    self.eng.create_segment(name, dsl, now=now)
                    existing.add(name)
        if self.eng.clock is None:
            self.eng.advance(now)

    def _scores(self, name: str) -> None:
        """Score RFM from the orders as of the query's now when the question asks for it
        (timed with the query, as the SQL engines compute it inside theirs)."""
        if name in self.rfm_queries:
            self.eng.rfm_compute(
                as_of=self.now,
                window_days=RFM_WINDOW_DAYS,
                scale=5,
                method="quantile",
                table=False,  # the question wants the cell, not a row per contact
            )

    def count(self, name: str) -> int:
        self._scores(name)
        return self.eng.segment(self.queries[name], self.now, cache=False).count()

    def members(self, name: str) -> list[str]:
        self._scores(name)
        return self.eng.segment(self.queries[name], self.now, cache=False).ids()

    def profile(self, name: str) -> dict:
        self._scores(name)
        return self.eng.profile(self.queries[name], self.now).to_dict()

    def throughput(self, name: str, threads: int, seconds: float) -> dict:
        """Evaluate ``name`` back to back in ``threads`` threads for about ``seconds``."""
        deadline = time.perf_counter() + seconds
        done = [0] * threads

        def loop(k: int) -> None:
            while time.perf_counter() < deadline or done[k] == 0:
                self.count(name)
                done[k] += 1

        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(loop, range(threads)))
        elapsed = time.perf_counter() - t0
        return {"threads": threads, "queries": sum(done), "seconds": elapsed}

    def stats(self) -> dict:
        s = self.eng.stats()
        return {
            "bytes_per_event": s["bytes_per_event"],
            "index_bytes_per_event": s.get("index_bytes_per_event"),
            "bytes_per_contact": s["bytes_per_contact"],
            "memory_bytes": s["memory_bytes"],
            "index_bytes": s.get("index_bytes", {}),
            "contacts": s["contacts"],
            "events": s["events"],
        }
