"""``segctl load contacts|items|events FILE``: bulk load over the API in Arrow IPC batches.

The file (CSV, Parquet or JSON Lines) is read in batches of ``--batch-rows`` rows; each
batch is one Arrow IPC message, all-or-nothing on the server. Contacts and items go one
UpsertContacts / UpsertItems call per batch; events go over one StreamEvents stream,
which is reopened after a rejected batch so the rest still loads. The summary names
every rejected batch, its rows and the server's reason.

Identifier columns (customer_id, item_id, order_id, event_id, ...) are read as text from
CSV, never inferred as numbers ("00001" stays "00001"). An events file without an
``event_id`` column cannot be deduplicated row by row, so its content digest goes with the
first batch: the server refuses content it has loaded before unless ``--force``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pyarrow as pa

from segd.server.client import SegdRpcError
from segd.server.segctl.console import (
    Cli,
    CommandFailed,
    UsageError,
    add_connection_options,
    human_int,
    stderr_is_tty,
)

KINDS = ("contacts", "items", "events")
FORMATS = ("csv", "parquet", "jsonl")


def register(sub: argparse._SubParsersAction) -> None:
    _register_demo(sub)
    p = sub.add_parser(
        "load",
        help="load contacts, items or events from a file",
        description="Load a CSV, Parquet or JSON Lines file (columns: docs/data-model.md).",
    )
    p.add_argument("kind", choices=KINDS)
    p.add_argument("file", help="path to .csv, .parquet or .jsonl / .ndjson")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="input format (default: from the file extension)",
    )
    p.add_argument(
        "--batch-rows",
        type=int,
        default=50_000,
        help="rows per batch; a rejected batch is rejected whole (default %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--force",
        action="store_true",
        help="load an events file even if the server has loaded the same content before",
    )
    add_connection_options(p)
    p.set_defaults(func=cmd_load)


def detect_format(path: str, given: str | None) -> str:
    if given:
        return given
    name = path.lower()
    for ext, fmt in (
        (".parquet", "parquet"),
        (".pq", "parquet"),
        (".csv", "csv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
    ):
        if name.endswith(ext):
            return fmt
    raise UsageError(
        f"cannot tell the format of {path!r}: use --format csv|parquet|jsonl"
    )


def _rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup reader batches into tables of exactly ``rows`` rows (the last: fewer)."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for b in batches:
        pending.append(b)
        have += b.num_rows
        while have >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(pending)


def read_batches(
    path: str, fmt: str, rows: int
) -> tuple[int | None, Iterator[pa.Table]]:
    """(total rows if known, iterator of tables of ``rows`` rows)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            return pf.metadata.num_rows, _rebatch(
                pf.iter_batches(batch_size=rows), rows
            )
        if fmt == "csv":
            import pyarrow.csv as pcsv

            from segd.ingest import TEXT_COLUMNS

            reader = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=16 << 20),
                convert_options=pcsv.ConvertOptions(
                    strings_can_be_null=True,
                    column_types={c: pa.string() for c in TEXT_COLUMNS},
                ),
            )
            return None, _rebatch(iter(reader), rows)
        import pyarrow.json as pjson

        table = pjson.read_json(path)
        return table.num_rows, _rebatch(iter(table.to_batches()), rows)
    except FileNotFoundError as exc:
        raise UsageError(f"no such file: {path}") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise UsageError(f"cannot read {path} as {fmt}: {exc}") from exc


@dataclass
class Rejection:
    batch: int
    first_row: int
    rows: int
    reason: str


@dataclass
class LoadSummary:
    kind: str
    file: str
    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "rows": self.rows,
            "duplicates": self.duplicates,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds)
            if self.seconds
            else None,
            "rejected_batches": len(self.rejected),
            "rejected_rows": sum(r.rows for r in self.rejected),
            "rejections": [r.__dict__ for r in self.rejected],
        }


def _reason(err: SegdRpcError) -> str:
    """What was wrong with a rejected batch, from the error's details (the field path
    within the batch and its description), not from its message text."""
    if err.violations:
        where, description = err.violations[0]
        return f"{where}: {description}" if where else description
    return err.message


def _numbered(tables: Iterator[pa.Table]) -> Iterator[tuple[int, int, pa.Table]]:
    first = 0
    for i, t in enumerate(tables):
        yield i, first, t
        first += t.num_rows


def _load_upserts(
    cli: Cli, kind: str, tables: Iterator, summary: LoadSummary, advance: Any
) -> None:
    call = cli.client.upsert_contacts if kind == "contacts" else cli.client.upsert_items
    for index, first, table in _numbered(tables):
        try:
            summary.rows += call(table)
        except SegdRpcError as err:
            if err.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            summary.rejected.append(
                Rejection(index, first, table.num_rows, _reason(err))
            )
        summary.batches += 1
        advance(table.num_rows)


def file_digest(path: str) -> str:
    """``blake2b:<hex>`` of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"blake2b:{h.hexdigest()}"


def _load_events(
    cli: Cli,
    tables: Iterator,
    summary: LoadSummary,
    advance: Any,
    file_source: Any = None,
) -> None:
    """One StreamEvents stream; after a rejected batch, a new stream for the rest.

    ``file_source`` (an EventSource) goes with the first batch of the first stream only,
    unless that batch carries an ``event_id`` column (then rows deduplicate by id)."""
    first_table: list[pa.Table] = []
    tables = iter(tables)
    head = next(tables, None)
    if head is not None:
        first_table.append(head)
        if "event_id" in head.column_names:
            file_source = None
    source = _numbered(itertools.chain(first_table, tables))
    retry: collections.deque = collections.deque()
    in_flight: collections.deque = collections.deque()  # sent, not yet acknowledged
    lock = threading.Lock()
    attempt = [0]

    def requests(mine: int) -> Iterator[pa.Table]:
        # gRPC pulls requests on its own thread, which may outlive a failed stream: a
        # stale generator must not take batches meant for the next stream.
        while True:
            with lock:
                if attempt[0] != mine:
                    return
                item = retry.popleft() if retry else next(source, None)
                if item is None:
                    return
                in_flight.append(item)
            yield item[2]

    def on_ack(ack: Any) -> None:
        with lock:
            _, _, table = in_flight.popleft()
        summary.rows += ack.rows
        summary.duplicates += ack.duplicates
        summary.batches += 1
        advance(table.num_rows)

    while True:
        try:
            cli.client.stream_events(
                requests(attempt[0]),
                on_ack=on_ack,
                source=file_source if attempt[0] == 0 else None,
            )
            return
        except SegdRpcError as err:
            with lock:
                attempt[0] += 1
                if err.code == grpc.StatusCode.ALREADY_EXISTS:
                    raise CommandFailed(err.message) from None
                if err.code != grpc.StatusCode.INVALID_ARGUMENT or not in_flight:
                    raise
                index, first, table = in_flight.popleft()
                # Sent after the bad one, never applied: resend them first, in order.
                retry.extendleft(reversed(in_flight))
                in_flight.clear()
            reason = _reason(err)
            summary.rejected.append(Rejection(index, first, table.num_rows, reason))
            summary.batches += 1
            advance(table.num_rows)


def cmd_load(cli: Cli) -> int:
    a = cli.args
    if a.batch_rows <= 0:
        raise UsageError("--batch-rows must be > 0")
    fmt = detect_format(a.file, a.format)
    total, tables = read_batches(a.file, fmt, a.batch_rows)
    summary = LoadSummary(a.kind, a.file)
    show = not (a.no_progress or cli.json) and stderr_is_tty(cli)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(f"[bold]{a.kind}[/] {os.path.basename(a.file)}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=cli.err,
        disable=not show,
        transient=False,
    )
    start = time.perf_counter()
    with progress:
        task = progress.add_task("load", total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        if a.kind == "events":
            from segd.v1 import ingest_pb2

            file_source = ingest_pb2.EventSource(
                digest=file_digest(a.file),
                name=os.path.basename(a.file),
                force=a.force,
            )
            _load_events(cli, tables, summary, advance, file_source)
        else:
            _load_upserts(cli, a.kind, tables, summary, advance)
    summary.seconds = time.perf_counter() - start
    _report(cli, summary)
    if summary.rejected:
        raise CommandFailed(f"{len(summary.rejected)} batch(es) rejected")
    return 0


def _report(cli: Cli, s: LoadSummary) -> None:
    d = s.to_dict()
    if cli.json:
        cli.emit_json(d)
        return
    rate = f"{d['rows_per_second']:,} rows/s" if d["rows_per_second"] else "-"
    cli.line(
        f"loaded {human_int(s.rows)} {s.kind} from {s.file} in {s.seconds:.2f} s "
        f"({rate}, {s.batches} batches)"
    )
    if s.duplicates:
        cli.line(
            f"dropped {human_int(s.duplicates)} duplicate events (event_id seen before)"
        )
    if s.rejected:
        cli.line(
            f"rejected {len(s.rejected)} batch(es), {human_int(d['rejected_rows'])} rows:"
        )
        cli.table(
            ["batch", "rows", "reason"],
            [
                [r.batch, f"{r.first_row:,}..{r.first_row + r.rows - 1:,}", r.reason]
                for r in s.rejected
            ],
        )


# ---------------------------------------------------------------- segctl demo write


def _register_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="the deterministic demo dataset",
        description="The demo dataset of `segctl serve --demo` (segd.datagen).",
    )
    verbs = demo.add_subparsers(dest="demo_command", metavar="VERB", required=True)
    p = verbs.add_parser(
        "write",
        help="write the demo dataset as Parquet (contacts, items, events)",
        description="Write contacts.parquet, items.parquet and events.parquet to DIR, "
        "streamed one row group at a time (10M contacts: ~7 GB peak, ~5 min). The same "
        "seed and --now give the same files.",
    )
    p.add_argument("--contacts", default="100k", help="e.g. 2500, 100k, 1m, 10m")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--seed", type=int, default=0, help="(default %(default)s)")
    p.add_argument(
        "--now",
        default=None,
        help="ISO-8601 end of the event window (default 2025-06-30, UTC)",
    )
    p.add_argument("--events-per-contact", type=float, default=20.0)
    p.add_argument("--row-group-size", type=int, default=None)
    p.set_defaults(func=cmd_demo_write)


def cmd_demo_write(cli: Cli) -> int:
    from segd import datagen
    from segd.timeutil import parse_iso

    a = cli.args
    try:
        contacts = datagen.parse_scale(a.contacts)
    except ValueError as exc:
        raise UsageError(f"--contacts: {exc}") from None
    now = datagen.DEFAULT_NOW
    if a.now is not None:
        parsed = parse_iso(a.now)
        if parsed is None:
            raise UsageError(
                f"--now: expected ISO-8601 such as 2025-06-30, got {a.now!r}"
            )
        now = parsed
    if a.events_per_contact < 0:
        raise UsageError("--events-per-contact must be >= 0")
    if a.row_group_size is not None and a.row_group_size <= 0:
        raise UsageError("--row-group-size must be > 0")
    started = time.monotonic()

    def show(phase: str, done: int, total: int) -> None:
        if phase != "events" or done == total:  # one line per phase
            cli.note(
                f"[{time.monotonic() - started:7.1f}s] {phase:<9} {done:>13,} rows"
            )

    extra = {} if a.row_group_size is None else {"row_group_size": a.row_group_size}
    paths = datagen.write_parquet_streaming(
        contacts,
        a.out,
        seed=a.seed,
        now=now,
        events_per_contact=a.events_per_contact,
        progress=show,
        **extra,
    )
    import pyarrow.parquet as pq

    written = {
        name: {"path": str(path), "rows": pq.ParquetFile(path).metadata.num_rows}
        for name, path in paths.items()
    }
    if cli.json:
        cli.emit_json({"now": now.isoformat(), "files": written})
    else:
        for name, w in written.items():
            cli.line(f"wrote {human_int(w['rows'])} {name} to {w['path']}")
    return 0
