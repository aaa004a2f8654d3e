"""``segctl load contacts|items|events FILE``: bulk load over the API in Arrow IPC batches.

The file (CSV, Parquet or JSON Lines) is read in batches of ``--batch-rows`` rows; each
batch is one Arrow IPC message, all-or-nothing on the server. Contacts and items go one
UpsertContacts / UpsertItems call per batch; events go over one StreamEvents stream,
which is reopened after a rejected batch so the rest still loads. The summary names
every rejected batch, its rows and the server's reason.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
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

            reader = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=16 << 20),
                convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
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
    rejected: list[Rejection] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "rows": self.rows,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds)
            if self.seconds
            else None,
            "rejected_batches": len(self.rejected),
            "rejected_rows": sum(r.rows for r in self.rejected),
            "rejections": [r.__dict__ for r in self.rejected],
        }


_BATCH_PREFIX = re.compile(r"^batch \d+: ")


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
                Rejection(index, first, table.num_rows, err.message)
            )
        summary.batches += 1
        advance(table.num_rows)


def _load_events(
    cli: Cli, tables: Iterator, summary: LoadSummary, advance: Any
) -> None:
    """One StreamEvents stream; after a rejected batch, a new stream for the rest."""
    source = _numbered(tables)
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
        summary.batches += 1
        advance(table.num_rows)

    while True:
        try:
            cli.client.stream_events(requests(attempt[0]), on_ack=on_ack)
            return
        except SegdRpcError as err:
            with lock:
                attempt[0] += 1
                if err.code != grpc.StatusCode.INVALID_ARGUMENT or not in_flight:
                    raise
                index, first, table = in_flight.popleft()
                # Sent after the bad one, never applied: resend them first, in order.
                retry.extendleft(reversed(in_flight))
                in_flight.clear()
            reason = _BATCH_PREFIX.sub("", err.message)
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
            _load_events(cli, tables, summary, advance)
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
