"""One bulk load of an events file into an empty engine: CPU, wall, phases, RSS.

    python -m segd.bench.load_file ~/.cache/segd/bench/1m-seed0/events.parquet
    python -m segd.bench.load_file PATH --arrow-reads    # segd.pqdict off (A/B)
    python -m segd.bench.load_file PATH --inline         # no read-ahead thread (A/B)
    flock /work/10m.lock python -m segd.bench.load_file ~/.cache/segd/bench/10m-seed0/events.parquet

Prints one line: events, CPU seconds (``time.process_time``: the figure to compare on a
shared machine), wall seconds, the CPU split into "validate" (read + validate + stage)
and "index" (commit + append), the final RSS (after ``gc.collect()``), the peak
(``ru_maxrss``), their ratio and the load average. ``--arrow-reads`` has every column
read by Arrow's Parquet reader (as before ``segd.pqdict``), for a before/after in one run;
``--inline`` reads and validates each chunk on the loading thread (``ingest.READ_AHEAD``
off): the CPU is about the same, the wall time shows what the overlap gives.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time
from collections.abc import Sequence

from segd import Engine, ingest, pqdict


def measure(
    path: str, *, arrow_reads: bool = False, inline: bool = False
) -> dict[str, float]:
    """Load `path` into a fresh in-memory engine; the figures as a dict."""
    ingest.READ_AHEAD = not inline
    if arrow_reads:
        pqdict.MIN_DICTIONARY_BYTES = 1 << 62  # no chunk qualifies: Arrow reads all
    phases: dict[str, float] = {}
    last = [time.process_time()]

    def progress(phase: str, rows: int) -> None:
        now = time.process_time()
        phases[phase] = phases.get(phase, 0.0) + now - last[0]
        last[0] = now

    eng = Engine()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    report = eng.load_events(path, progress=progress)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    gc.collect()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "events": report.rows,
        "cpu_s": cpu,
        "wall_s": wall,
        "validate_cpu_s": phases.get("validate", 0.0),
        "index_cpu_s": phases.get("index", 0.0),
        "rss_bytes": rss,
        "peak_bytes": peak,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segd.bench.load_file")
    parser.add_argument("path")
    parser.add_argument("--arrow-reads", action="store_true")
    parser.add_argument("--inline", action="store_true")
    args = parser.parse_args(argv)
    r = measure(args.path, arrow_reads=args.arrow_reads, inline=args.inline)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"events {r['events']} cpu {r['cpu_s']:.2f} wall {r['wall_s']:.2f} -> "
        f"{r['events'] / r['cpu_s'] / 1e6:.2f}M/cpu-s "
        f"{r['events'] / r['wall_s'] / 1e6:.2f}M/s wall; "
        f"validate {r['validate_cpu_s']:.2f} index {r['index_cpu_s']:.2f} cpu-s; "
        f"rss {r['rss_bytes'] / 1e9:.2f}GB peak {r['peak_bytes'] / 1e9:.2f}GB "
        f"ratio {r['peak_bytes'] / r['rss_bytes']:.2f} load {load}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
