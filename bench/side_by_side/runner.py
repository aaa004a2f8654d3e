"""Run the query suite on segd and DuckDB side by side and collect the results.

One worker subprocess per engine (``worker.Worker``). Both load the same cached Parquet
files, one after the other (so neither load competes with the other for cores). Then
every round runs every query on both engines, alternating which engine goes first; round
0 is a warm-up and is not counted (unless it is the only round). Each timed sample runs
the query ``reps`` times back to back, with ``reps`` chosen from the warm-up so a sample
lasts at least ``MIN_SAMPLE_S``; the reported time is the median over rounds of the
per-call mean. Members are compared once per query (count and sha256 of the sorted ids).

``Options.engines`` picks the engines: ``("segd",)`` runs segd alone (no DuckDB worker,
no member comparison; DuckDB's figures stay ``None``) — for scales DuckDB cannot load in
the machine's memory.
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
MIN_SAMPLE_S = 0.05
MAX_REPS = 50
THROUGHPUT_S = 2.0
ENGINES = ("segd", "duckdb")
MODULES = {"segd": SEGD, "duckdb": DUCKDB}

Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]


@dataclass
class Options:
    rounds: int = 5
    threads: int = 1  # segd threads for the throughput check of the reference segment
    duckdb_threads: int | None = None  # None: DuckDB's default, every core
    profile: bool = True  # keep segd's per-condition profile of each query
    engines: tuple[str, ...] = ENGINES  # ("segd",): segd alone, nothing compared


@dataclass
class QueryResult:
    query: Query
    segd_s: list[float] = field(default_factory=list)
    duckdb_s: list[float] = field(default_factory=list)
    segd_count: int | None = None
    duckdb_count: int | None = None
    segd_hash: str = ""
    duckdb_hash: str = ""
    reps: dict[str, int] = field(default_factory=dict)
    error: str = ""
    profile: dict | None = None
    compared: bool = True  # False when DuckDB did not run: nothing to compare with

    @property
    def match(self) -> bool | None:
        """True / False: the engines agree or not; None: segd ran alone (no error)."""
        if self.error:
            return False
        if not self.compared:
            return None
        return (
            self.segd_count == self.duckdb_count and self.segd_hash == self.duckdb_hash
        )


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
    segd_ids = workers["segd"].call("members", res.query.name)
    if "duckdb" not in workers:  # segd alone: record its members, compare nothing
        res.compared = False
        res.segd_count, res.segd_hash = members_digest(segd_ids)
        return
    duck_ids = workers["duckdb"].call("members", res.query.name)
    res.segd_count, res.segd_hash = members_digest(segd_ids)
    res.duckdb_count, res.duckdb_hash = members_digest(duck_ids)
    if not res.match:
        only_segd = sorted(set(segd_ids) - set(duck_ids))[:5]
        only_duck = sorted(set(duck_ids) - set(segd_ids))[:5]
        res.error = (
            f"segd {res.segd_count} members, DuckDB {res.duckdb_count}; "
            f"only in segd e.g. {only_segd}, only in DuckDB e.g. {only_duck}"
        )


def _sample(workers, res: QueryResult, engines: list[str], warm: bool) -> None:
    for eng in engines:
        reps = 1 if warm else res.reps[eng]
        got = workers[eng].request("time", {"name": res.query.name, "reps": reps})
        if warm:
            res.reps[eng] = _reps(got["seconds"])
        (res.segd_s if eng == "segd" else res.duckdb_s).append(got["seconds"])
        counted = res.segd_count if eng == "segd" else res.duckdb_count
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
    results = [QueryResult(q, compared="duckdb" in workers) for q in queries]
    total = len(results) * max(opts.rounds, 1)
    done = 0
    for rnd in range(max(opts.rounds, 1)):
        warm = rnd == 0
        order = ["segd", "duckdb"] if rnd % 2 == 0 else ["duckdb", "segd"]
        order = [eng for eng in order if eng in workers]
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
            res.segd_s, res.duckdb_s = res.segd_s[1:], res.duckdb_s[1:]
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
        threads = {"segd": opts.threads, "duckdb": opts.duckdb_threads}
        for eng in engines:
            workers[eng] = Worker(MODULES[eng], {"threads": threads[eng]})
        loads = {}
        for eng in engines:
            say(f"{workers[eng].label}: loading {ds.directory}")
            loads[eng] = workers[eng].request(
                "load", {"paths": ds.paths}, on_progress=progress
            )
        say("creating saved segments; preparing queries")
        workers["segd"].call("prepare", runnable, ds.now)
        if "duckdb" in workers:
            workers["duckdb"].call("prepare", runnable)
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
