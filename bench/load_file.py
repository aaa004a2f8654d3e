"""One bulk load of an events file into an empty engine: CPU, wall, phases, RSS.

    python -m segd.bench.load_file ~/.cache/segd/bench/1m-seed0/events.parquet
    python -m segd.bench.load_file PATH --arrow-reads    # segd.pqdict off (A/B)
    python -m segd.bench.load_file PATH --inline         # no read-ahead thread (A/B)
    python -m segd.bench.load_file PATH --serial-commit  # commit on one thread (A/B)
    python -m segd.bench.load_file PATH --no-stage-ahead # items etc. encoded on the loading thread
    python -m segd.bench.load_file PATH --no-adopt       # engine maps re-hash the staged ones
    python -m segd.bench.load_file PATH --load5          # all three off: load5's path
    python -m segd.bench.load_file PATH --no-key-index   # ids straight into the maps
    python -m segd.bench.load_file PATH --load6          # load7's switches off: load6's path
    python -m segd.bench.load_file PATH --no-sparse-split # split by type on the loading thread
    python -m segd.bench.load_file PATH --no-grow-ahead  # staged maps grow as they fill
    python -m segd.bench.load_file PATH --numpy-amounts  # amounts' NULLs filled by numpy
    python -m segd.bench.load_file PATH --digest         # + a digest of what was loaded
    python -m segd.bench.load_file PATH --load7          # load8's switches off: load7's path
    python -m segd.bench.load_file PATH --row-order-postings # postings appended row by row
    python -m segd.bench.load_file PATH --serial-columns # no helper thread for a column
    python -m segd.bench.load_file PATH --load8          # load9's switches off: load8's path
    flock /work/10m.lock python -m segd.bench.load_file ~/.cache/segd/bench/10m-seed0/events.parquet

``--digest`` adds a second line, a BLAKE2b digest of everything the load built (the
contact, item and value maps in code order, each log's columns, the rollups), computed
after the figures: two runs with different switches must print the same digest.

Prints one line: events, CPU seconds (``time.process_time``: the figure to compare on a
shared machine), wall seconds, the CPU split into "validate" (read + validate + stage)
and "index" (commit + append), the final RSS (after ``gc.collect()``), the peak
(``ru_maxrss``), their ratio, the minor page faults of the load (first touches of new
memory), its system CPU seconds (part of the CPU figure) and the load average.
``--arrow-reads`` has every column read by Arrow's Parquet reader (as before
``segd.pqdict``), for a before/after in one run;
``--inline`` reads and validates each chunk on the loading thread (``ingest.READ_AHEAD``
off): the CPU is about the same, the wall time shows what the overlap gives;
``--serial-commit`` appends the logs on the loading thread too (``ingest.PARALLEL_COMMIT``
off); ``--no-stage-ahead`` encodes items, dimensions and event ids on the loading
thread (``ingest.STAGE_AHEAD`` off); ``--no-adopt`` has an empty engine re-add the
staged values instead of taking the staged maps (``ingest.ADOPT_STAGED_MAPS`` off);
``--no-key-index`` codes customer and item ids straight into the staged maps
(``ingest.KEY_INDEX`` off); ``--load6`` turns off every switch ``load7`` added;
``--no-sparse-split`` expands every column to one code per row and splits it by type on
the loading thread (``ingest.SPARSE_SPLIT`` off), ``--no-grow-ahead`` lets the staged
customer and item maps grow as they fill (``ingest.GROW_AHEAD`` off),
``--numpy-amounts`` checks amounts and fills their NULLs with numpy
(``ingest.NATIVE_AMOUNTS`` off), and ``--load7`` turns off every switch
``load8`` added. ``--row-order-postings`` appends each log's postings row by row
(``segd.native.postings.PARTITIONED_APPEND`` off), ``--serial-columns`` decodes
every segd-read column of a row group on the read-ahead thread (``pqdict.PARALLEL_COLUMNS``
off), and ``--load8`` turns off every switch ``load9`` added. Each phase's CPU is also given for the loading thread alone ("main"): the rest
ran on the read-ahead / commit worker, so on two idle cores a phase takes about
max(main, total - main) of wall time — the figure to read on a busy machine, where the
wall time is mostly waiting.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time
from collections.abc import Sequence

from segd import Engine, ingest, pqdict
from segd.native import postings


def measure(
    path: str,
    *,
    arrow_reads: bool = False,
    inline: bool = False,
    serial_commit: bool = False,
    no_stage_ahead: bool = False,
    no_adopt: bool = False,
    no_key_index: bool = False,
    no_sparse_split: bool = False,
    no_grow_ahead: bool = False,
    numpy_amounts: bool = False,
    row_order_postings: bool = False,
    serial_columns: bool = False,
    digests: list[str] | None = None,
) -> dict[str, float]:
    """Load `path` into a fresh in-memory engine; the figures as a dict (and, when
    `digests` is a list, the loaded engine's ``digest`` appended to it)."""
    ingest.READ_AHEAD = not inline
    ingest.PARALLEL_COMMIT = not serial_commit
    ingest.STAGE_AHEAD = not no_stage_ahead
    ingest.ADOPT_STAGED_MAPS = not no_adopt
    ingest.KEY_INDEX = not no_key_index
    ingest.SPARSE_SPLIT = not no_sparse_split
    ingest.GROW_AHEAD = not no_grow_ahead
    ingest.NATIVE_AMOUNTS = not numpy_amounts
    postings.PARTITIONED_APPEND = not row_order_postings
    pqdict.PARALLEL_COLUMNS = not serial_columns
    if arrow_reads:
        pqdict.MIN_DICTIONARY_BYTES = 1 << 62  # no chunk qualifies: Arrow reads all
    phases: dict[str, float] = {}
    last = [time.process_time(), time.thread_time(), time.perf_counter()]

    def progress(phase: str, rows: int) -> None:
        # progress is called on the loading thread: its own CPU (thread_time) against
        # the process's tells how much ran on the other threads (read-ahead, commit).
        now = [time.process_time(), time.thread_time(), time.perf_counter()]
        for key, i in ((phase, 0), (phase + "_main", 1), (phase + "_wall", 2)):
            phases[key] = phases.get(key, 0.0) + now[i] - last[i]
        last[:] = now

    eng = Engine()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    last[:] = [cpu0, time.thread_time(), wall0]
    report = eng.load_events(path, progress=progress)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    faults = usage.ru_minflt - usage0.ru_minflt
    sys_s = usage.ru_stime - usage0.ru_stime
    gc.collect()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if digests is not None:  # after the figures: hashing 13 GB takes a while
        digests.append(digest(eng))
    return {
        "events": report.rows,
        "cpu_s": cpu,
        "wall_s": wall,
        "validate_cpu_s": phases.get("validate", 0.0),
        "index_cpu_s": phases.get("index", 0.0),
        "validate_main_cpu_s": phases.get("validate_main", 0.0),
        "index_main_cpu_s": phases.get("index_main", 0.0),
        "validate_wall_s": phases.get("validate_wall", 0.0),
        "index_wall_s": phases.get("index_wall", 0.0),
        "rss_bytes": rss,
        "peak_bytes": peak,
        "minor_faults": faults,
        "sys_s": sys_s,
    }


def digest(eng: Engine) -> str:
    """A digest of what a load built: maps in code order, log columns, rollups."""
    import hashlib

    import numpy as np

    h = hashlib.blake2b(digest_size=16)

    def arrow(arr) -> None:
        h.update(str(len(arr)).encode())
        for buf in arr.buffers():
            if buf is not None:
                h.update(memoryview(buf))

    store = eng.store
    arrow(store.contacts.ids.to_arrow())
    arrow(store.catalog.ids.to_arrow())
    for name in sorted(store.dim_maps):
        h.update(name.encode())
        arrow(store.dim_maps[name].to_arrow())
    n = len(store.contacts.ids)
    for name in store.aggregates.ARRAYS:
        h.update(name.encode())
        h.update(np.ascontiguousarray(getattr(store.aggregates, name)[:n]).data)
    for name, log in sorted(store.logs.items()):
        h.update(name.encode())
        cols = [("cid", log.cid), ("ts", log.ts)]
        cols += [(d, log.dim(d)) for d in sorted(log.dims())]
        if log.amount is not None:
            cols.append(("amount", log.amount))
        for col, values in cols:
            h.update(col.encode())
            h.update(np.ascontiguousarray(values).data)
    return h.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segd.bench.load_file")
    parser.add_argument("path")
    parser.add_argument("--arrow-reads", action="store_true")
    parser.add_argument("--inline", action="store_true")
    parser.add_argument("--serial-commit", action="store_true")
    parser.add_argument("--no-stage-ahead", action="store_true")
    parser.add_argument("--no-adopt", action="store_true")
    parser.add_argument("--no-key-index", action="store_true")
    parser.add_argument("--no-sparse-split", action="store_true")
    parser.add_argument("--no-grow-ahead", action="store_true")
    parser.add_argument("--numpy-amounts", action="store_true")
    parser.add_argument("--row-order-postings", action="store_true")
    parser.add_argument("--serial-columns", action="store_true")
    parser.add_argument("--digest", action="store_true")
    parser.add_argument(
        "--load5", action="store_true", help="every switch of load6 and load7 off (A/B)"
    )
    parser.add_argument(
        "--load6", action="store_true", help="every switch of load7 off (A/B)"
    )
    parser.add_argument(
        "--load7", action="store_true", help="every switch of load8 off (A/B)"
    )
    parser.add_argument(
        "--load8", action="store_true", help="every switch of load9 off (A/B)"
    )
    args = parser.parse_args(argv)
    # --loadN turns off every switch added after loadN (so also those --loadN+1 does)
    before6 = args.load5
    before7 = before6 or args.load6
    before8 = before7 or args.load7
    before9 = before8 or args.load8
    digests: list[str] | None = [] if args.digest else None
    r = measure(
        args.path,
        arrow_reads=args.arrow_reads,
        inline=args.inline,
        serial_commit=args.serial_commit or args.load5,
        no_stage_ahead=args.no_stage_ahead or before6,
        no_adopt=args.no_adopt or before6,
        no_key_index=args.no_key_index or before7,
        no_sparse_split=args.no_sparse_split or before8,
        no_grow_ahead=args.no_grow_ahead or before8,
        numpy_amounts=args.numpy_amounts or before8,
        row_order_postings=args.row_order_postings or before9,
        serial_columns=args.serial_columns or before9,
        digests=digests,
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"events {r['events']} cpu {r['cpu_s']:.2f} wall {r['wall_s']:.2f} -> "
        f"{r['events'] / r['cpu_s'] / 1e6:.2f}M/cpu-s "
        f"{r['events'] / r['wall_s'] / 1e6:.2f}M/s wall; "
        f"validate {r['validate_cpu_s']:.2f} (main {r['validate_main_cpu_s']:.2f}, "
        f"wall {r['validate_wall_s']:.2f}) index {r['index_cpu_s']:.2f} "
        f"(main {r['index_main_cpu_s']:.2f}, wall {r['index_wall_s']:.2f}) cpu-s; "
        f"rss {r['rss_bytes'] / 1e9:.2f}GB peak {r['peak_bytes'] / 1e9:.2f}GB "
        f"ratio {r['peak_bytes'] / r['rss_bytes']:.2f} "
        f"minflt {r['minor_faults'] / 1e6:.2f}M sys {r['sys_s']:.2f}s load {load}"
    )
    if digests:
        print(f"digest {digests[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
