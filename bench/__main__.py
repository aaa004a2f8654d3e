"""``python -m segd.bench``: the query suite on segd and DuckDB side by side (docs/benchmarks.md).

    python -m segd.bench --contacts 1m --rounds 5          # tables on the terminal
    python -m segd.bench --contacts 100k --json            # the JSON record only, on stdout
    python -m segd.bench --contacts 1m --markdown          # a table for BENCHMARKS.md
    python -m segd.bench --contacts 10m --engines segd     # segd alone (DuckDB cannot fit)
    python -m segd.bench grpc --address 127.0.0.1:50051    # drive a running segd server
    python -m segd.bench wal --fsync always,interval,off   # durable ingest, replay, snapshot
    python -m segd.bench live --contacts 1m                # live segments: ingest, time
    python -m segd.bench recs quality --contacts 20k       # recommendation hit rate / recall
    python -m segd.bench recs perf --contacts 100k --grpc  # model build, lookup latency
    python -m segd.bench merge --contacts 2m               # identity merges, ingest by link

Progress and phase messages go to stderr, so ``--json`` output stays clean. Exit codes:
0 every query matched (or, with ``--engines segd``, segd answered every query), 1 a
query's members differ between the engines (or an engine
failed), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from segd.bench import machine
from segd.bench.dataset import (
    CACHE_ENV,
    cached_dataset,
    default_cache_dir,
    ensure_dataset,
    scale_label,
)
from segd.bench.queries import names, select, suite

PROG = "python -m segd.bench"
GEN_PHASES = ("contacts", "items", "activity", "sort", "events", "writing parquet")


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run the segd query suite next to DuckDB on the demo data "
        f"(or `{prog} grpc --help` to load-test a running server).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--contacts", default="100k", help="scale: 2000, 100k, 1m, 10m ...")
    p.add_argument("--seed", type=int, default=0, help="datagen seed")
    p.add_argument(
        "--rounds", type=int, default=5, help="rounds; the first is a warm-up"
    )
    p.add_argument(
        "--queries",
        help="comma-separated subset of: " + ", ".join(names()),
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="segd threads; with 2+, the reference segment is also run concurrently "
        "to show GIL-free scaling",
    )
    p.add_argument(
        "--engines",
        default="segd,duckdb",
        help="comma-separated engines to run: segd,duckdb or segd alone (no DuckDB "
        "worker, no member comparison; for scales DuckDB cannot load in memory)",
    )
    p.add_argument(
        "--duckdb-threads",
        type=int,
        default=None,
        help="DuckDB threads (default: every core)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print only the JSON record")
    out.add_argument(
        "--markdown", action="store_true", help="print markdown for BENCHMARKS.md"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"where the Parquet data goes (default: ${CACHE_ENV}, else "
        f"{default_cache_dir()})",
    )
    p.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="where the JSON record goes (default bench/results)",
    )
    p.add_argument(
        "--regenerate", action="store_true", help="ignore the cached dataset"
    )
    p.add_argument(
        "--no-profile",
        action="store_true",
        help="do not record segd's per-condition profile of each query",
    )
    p.add_argument("--list", action="store_true", help="list the queries and exit")
    return p


class Ui:
    """Phase messages and rich progress bars, all on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.err = Console(stderr=True, quiet=quiet)
        self.started = time.monotonic()

    def say(self, msg: str) -> None:
        self.err.log(msg)

    @contextmanager
    def progress(self, description: str, total: int):
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        bar = Progress(
            TextColumn("{task.description:<48}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=self.err,
            transient=False,
        )
        with bar:
            task = bar.add_task(description, total=total)

            def update(phase: str, done: int, total_: int) -> None:
                bar.update(task, description=phase[:48], completed=done, total=total_)

            yield update


def _generate(ui: Ui, args, contacts: int):
    if not args.regenerate:
        ds = cached_dataset(contacts, args.seed, args.cache_dir)
        if ds is not None:
            return ds, True
    with ui.progress("generating", len(GEN_PHASES)) as update:
        step = {"n": 0}

        def progress(phase: str, done: int, total: int) -> None:
            if phase in GEN_PHASES and done == total:
                step["n"] = GEN_PHASES.index(phase) + 1
            update(f"generating: {phase} ({done:,} rows)", step["n"], len(GEN_PHASES))

        return ensure_dataset(
            contacts,
            args.seed,
            root=args.cache_dir,
            progress=progress,
            regenerate=args.regenerate,
        )


def run_suite(args) -> int:
    from segd.bench import report
    from segd.bench.side_by_side import runner
    from segd.datagen import parse_scale

    ui = Ui(quiet=False)
    contacts = parse_scale(args.contacts)
    facts = machine.facts()
    ui.say(f"dataset {scale_label(contacts)} seed {args.seed}")
    ds, cached = _generate(ui, args, contacts)
    ui.say(
        f"{'reusing cached' if cached else 'wrote'} {ds.directory}: "
        f"{ds.contacts:,} contacts, {ds.events:,} events, now {ds.now.isoformat()}"
    )
    queries = select(suite(ds.now), _split(args.queries))
    opts = runner.Options(
        rounds=args.rounds,
        threads=args.threads,
        duckdb_threads=args.duckdb_threads,
        profile=not args.no_profile,
        engines=args.engines,
    )
    with ui.progress("loading", 3) as update:
        raw = runner.run(ds, queries, opts, ui.say, update, full_suite=not args.queries)
    command = "python -m segd.bench " + " ".join(
        shlex.quote(a) for a in (args.argv or [])
    )
    rec = report.build_record(
        raw, ds, opts, facts, command.strip(), machine.load_average()
    )
    path = report.write_record(rec, args.results_dir)
    ui.say(f"wrote {path}")
    if args.json:
        print(json.dumps(rec, indent=2))
    elif args.markdown:
        print(report.render_markdown(rec), end="")
    else:
        from rich.console import Console

        report.render_rich(rec, Console())
    bad = report.failures(rec)
    for line in bad:
        ui.err.print(f"[bold red]MISMATCH {line}[/bold red]")
    if bad:
        what = (
            "gave different members on segd and DuckDB"
            if "duckdb" in opts.engines
            else "failed on segd"
        )
        ui.err.print(
            f"[bold red]FAILED: {len(bad)} quer{'y' if len(bad) == 1 else 'ies'} "
            f"{what}[/bold red]"
        )
        return 1
    return 0


def parse_engines(text: str) -> tuple[str, ...]:
    """``"segd,duckdb"`` -> ``("segd", "duckdb")``; segd is required (the suite is
    segd's: DuckDB is only ever the comparison)."""
    from segd.bench.side_by_side.runner import ENGINES

    chosen = _split(text) or []
    unknown = [e for e in chosen if e not in ENGINES]
    if unknown:
        raise ValueError(
            f"unknown engine {unknown[0]!r} (choose from {', '.join(ENGINES)})"
        )
    if "segd" not in chosen:
        raise ValueError("--engines must include segd (DuckDB is the comparison)")
    return tuple(e for e in ENGINES if e in chosen)


def _split(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Entry point; returns the exit code. ``segctl bench ...`` forwards here with
    ``prog="segctl bench"`` so usage and errors name the command the user typed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["wal"]:
        from segd.bench import durability

        return durability.main(argv[1:])
    if argv[:1] == ["live"]:
        from segd.bench import live

        return live.main(argv[1:])
    if argv[:1] == ["recs"]:
        from segd.bench import recs

        return recs.main(argv[1:])
    if argv[:1] == ["merge"]:
        from segd.bench import merge

        return merge.main(argv[1:])
    if argv[:1] == ["grpc"]:
        from segd.bench import grpc_load

        return grpc_load.main(argv[1:], prog=f"{prog} grpc")
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.cache_dir is None:
        args.cache_dir = default_cache_dir()
    args.argv = argv
    if args.list:
        from segd.datagen import DEFAULT_NOW

        for q in suite(DEFAULT_NOW):
            status = f"  (skipped: {q.skip})" if q.skip else ""
            print(f"{q.name:22} {q.title}{status}")
        return 0
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    try:
        args.engines = parse_engines(args.engines)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        from segd.datagen import parse_scale

        parse_scale(args.contacts)
        select(suite_names_now(), _split(args.queries))
    except ValueError as exc:
        parser.error(str(exc))
    return run_suite(args)


def suite_names_now():
    from segd.datagen import DEFAULT_NOW

    return suite(DEFAULT_NOW)


if __name__ == "__main__":
    raise SystemExit(main())
