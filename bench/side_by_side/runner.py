"""Run the query suite on segd and the reference engines (DuckDB, ClickHouse through
chdb) side by side and collect the results.

One worker subprocess per engine (``worker.Worker``). All load the same cached Parquet
files, one after the other (so no load competes with another for cores). Then every
round runs every query on every engine, rotating which engine goes first; round 0 is a
warm-up and is not counted (unless it is the only round). Each timed sample runs the
query ``reps`` times back to back, with ``reps`` chosen from the warm-up so a sample
lasts at least ``MIN_SAMPLE_S``; the reported time is the median over rounds of the
per-call mean. Members are compared once per query (count and sha256 of the sorted ids):
every reference engine must give segd's members.

``Options.engines`` picks the engines: ``("segd",)`` runs segd alone (no comparison; the
reference engines' figures stay ``None``) — for scales they cannot load in memory;
``("segd", "duckdb", "chdb")`` runs all three. DuckDB gets a database file (buffer
managed, so it can spill) instead of an in-memory database from ``DUCKDB_FILE_AT``
contacts on (``Options.duckdb_storage``).
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from segd.bench.dataset import Dataset
from segd.bench.queries import REFERENCE, Query
from segd.bench.side_by_side.worker import Worker, WorkerError

SEGD = "segd.bench.side_by_side.engine_segd"
DUCKDB = "segd.bench.side_by_side.engine_duckdb"
CHDB = "segd.bench.side_by_side.engine_chdb"
MIN_SAMPLE_S = 0.05
MAX_REPS = 50
THROUGHPUT_S = 2.0
ENGINES = ("segd", "duckdb", "chdb")
REFERENCE_ENGINES = ("duckdb", "chdb")  # compared with segd
DEFAULT_ENGINES = ("segd", "duckdb")
MODULES = {"segd": SEGD, "duckdb": DUCKDB, "chdb": CHDB}
NAMES = {"segd": "segd", "duckdb": "DuckDB", "chdb": "ClickHouse"}
DUCKDB_FILE_AT = 5_000_000  # contacts from which DuckDB gets a database file

Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]


@dataclass
class Options:
    rounds: int = 5
    threads: int = 1  # segd threads for the throughput check of the reference segment
    duckdb_threads: int | None = None  # None: DuckDB's default, every core
    chdb_threads: int | None = None  # None: ClickHouse's default, every core
    profile: bool = True  # keep segd's per-condition profile of each query
    engines: tuple[str, ...] = DEFAULT_ENGINES  # ("segd",): segd alone
    # "memory", "file" (a database file in a temporary directory: buffer managed, can
    # spill to disk) or "auto" (file from DUCKDB_FILE_AT contacts on)
    duckdb_storage: str = "auto"

    def duckdb_file(self, contacts: int) -> bool:
        if self.duckdb_storage == "auto":
            return contacts >= DUCKDB_FILE_AT
        return self.duckdb_storage == "file"


@dataclass
class QueryResult:
    query: Query
    segd_s: list[float] = field(default_factory=list)
    duckdb_s: list[float] = field(default_factory=list)
    chdb_s: list[float] = field(default_factory=list)
    segd_count: int | None = None
    duckdb_count: int | None = None
    chdb_count: int | None = None
    segd_hash: str = ""
    duckdb_hash: str = ""
    chdb_hash: str = ""
    reps: dict[str, int] = field(default_factory=dict)
    # per engine, the worker's CPU seconds per call of each timed sample (beside the
    # wall samples above; all of the engine's threads)
    cpu_s: dict[str, list[float]] = field(default_factory=dict)
    error: str = ""
    profile: dict | None = None
    # the reference engines that ran (compared with segd); empty: segd ran alone
    compared_with: tuple[str, ...] = ()

    @property
    def compared(self) -> bool:
        return bool(self.compared_with)

    def samples(self, engine: str) -> list[float]:
        return getattr(self, f"{engine}_s")

    def count_of(self, engine: str) -> int | None:
        return getattr(self, f"{engine}_count")

    def agrees(self, engine: str) -> bool:
        return (self.count_of(engine), getattr(self, f"{engine}_hash")) == (
            self.segd_count,
            self.segd_hash,
        )

    @property
    def match(self) -> bool | None:
        """True / False: every engine run agrees with segd or not; None: segd ran
        alone (no error)."""
        if self.error:
            return False
        if not self.compared_with:
            return None
        return all(self.agrees(eng) for eng in self.compared_with)


def members_digest(ids: list[str]) -> tuple[int, str]:
    """(count, sha256 of the sorted ids joined by newlines): order-independent."""
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return len(ids), digest


def median(samples: list[float]) -> float | None:
    return statistics.median(samples) if samples else None


def _reps(warm_s: float) -> int:
    if warm_s <= 0:
        return MAX_REPS
    return max(1, min(MAX_REPS, math.ceil(MIN_SAMPLE_S / warm_s)))


def _check_members(workers: dict[str, Worker], res: QueryResult) -> None:
    """segd's members against each reference engine's (count and digest); a mismatch
    names the engine and a few ids found on one side only."""
    segd_ids = workers["segd"].call("members", res.query.name)
    res.segd_count, res.segd_hash = members_digest(segd_ids)
    problems = []
    for eng in res.compared_with:
        ids = workers[eng].call("members", res.query.name)
        count, digest = members_digest(ids)
        setattr(res, f"{eng}_count", count)
        setattr(res, f"{eng}_hash", digest)
        if not res.agrees(eng):
            name = NAMES[eng]
            only_segd = sorted(set(segd_ids) - set(ids))[:5]
            only_other = sorted(set(ids) - set(segd_ids))[:5]
            problems.append(
                f"segd {res.segd_count} members, {name} {count}; "
                f"only in segd e.g. {only_segd}, only in {name} e.g. {only_other}"
            )
    if problems:
        res.error = " / ".join(problems)


def _sample(workers, res: QueryResult, engines: list[str], warm: bool) -> None:
    for eng in engines:
        reps = 1 if warm else res.reps[eng]
        got = workers[eng].request("time", {"name": res.query.name, "reps": reps})
        if warm:
            res.reps[eng] = _reps(got["seconds"])
        res.samples(eng).append(got["seconds"])
        res.cpu_s.setdefault(eng, []).append(got["cpu_seconds"])
        counted = res.count_of(eng)
        if counted is not None and got["count"] != counted:
            res.error = res.error or (
                f"{eng} count {got['count']} differs from its members ({counted})"
            )


def run_queries(
    workers: dict[str, Worker],
    queries: list[Query],
    opts: Options,
    say: Say,
    progress: Progress,
) -> list[QueryResult]:
    """Warm-up + members check, then ``opts.rounds - 1`` timed rounds (alternating)."""
    others = tuple(eng for eng in REFERENCE_ENGINES if eng in workers)
    results = [QueryResult(q, compared_with=others) for q in queries]
    total = len(results) * max(opts.rounds, 1)
    done = 0
    running = [eng for eng in ENGINES if eng in workers]
    for rnd in range(max(opts.rounds, 1)):
        warm = rnd == 0
        shift = rnd % len(running)  # each engine goes first in turn
        order = running[shift:] + running[:shift]
        for res in results:
            progress(f"round {rnd + 1}/{opts.rounds}{' (warm-up)' if warm else ''}: "
                     f"{res.query.name}", done, total)  # fmt: skip
            try:
                if warm:
                    _check_members(workers, res)
                _sample(workers, res, order, warm)
            except WorkerError as exc:
                res.error = res.error or str(exc)
            done += 1
    if opts.rounds > 1:  # drop the warm-up samples
        for res in results:
            for eng in ENGINES:
                del res.samples(eng)[:1]
                del res.cpu_s.get(eng, [])[:1]
    if opts.profile:
        for res in results:
            if not res.error:
                res.profile = workers["segd"].call("profile", res.query.name)
    progress("queries done", total, total)
    return results


def run_throughput(workers, opts: Options, say: Say) -> dict | None:
    """segd's reference segment evaluated in 1 thread, then in ``opts.threads`` threads."""
    if opts.threads <= 1:
        return None
    say(
        f"segd: reference segment in 1 and {opts.threads} threads ({THROUGHPUT_S}s each)"
    )
    single = workers["segd"].call("throughput", REFERENCE, 1, THROUGHPUT_S)
    multi = workers["segd"].call("throughput", REFERENCE, opts.threads, THROUGHPUT_S)
    return {"single": single, "multi": multi}


def run(
    ds: Dataset,
    queries: list[Query],
    opts: Options,
    say: Say,
    progress: Progress,
    full_suite: bool = True,
) -> dict:
    """Load ``opts.engines``, run the queries; raw results for ``segd.bench.report``.

    ``full_suite``: False when only some queries were asked for (then the suite-level
    targets are not judged)."""
    runnable = [q for q in queries if not q.skip]
    workers: dict[str, Worker] = {}
    try:
        engines = [eng for eng in ENGINES if eng in opts.engines]
        say(f"starting the engine workers (one subprocess each): {', '.join(engines)}")
        options: dict[str, dict] = {
            "segd": {"threads": opts.threads},
            "duckdb": {
                "threads": opts.duckdb_threads,
                "database_file": opts.duckdb_file(ds.contacts),
            },
            "chdb": {"threads": opts.chdb_threads},
        }
        for eng in engines:
            workers[eng] = Worker(MODULES[eng], options[eng])
        loads = {}
        for eng in engines:
            say(f"{workers[eng].label}: loading {ds.directory}")
            loads[eng] = workers[eng].request(
                "load", {"paths": ds.paths}, on_progress=progress
            )
        say("creating saved segments; preparing queries")
        workers["segd"].call("prepare", runnable, ds.now)
        for eng in REFERENCE_ENGINES:
            if eng in workers:
                workers[eng].call("prepare", runnable)
        results = run_queries(workers, runnable, opts, say, progress)
        throughput = (
            run_throughput(workers, opts, say)
            if any(q.name == REFERENCE for q in runnable)
            else None
        )
        stats = {eng: w.call("stats") for eng, w in workers.items()}
        labels = {eng: w.label for eng, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    return {
        "loads": loads,
        "results": results,
        "skipped": [q for q in queries if q.skip],
        "throughput": throughput,
        "stats": stats,
        "labels": labels,
        "full_suite": full_suite,
        "engines": engines,
        "finished": time.time(),
    }
