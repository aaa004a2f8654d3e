"""``python -m segd.bench grpc``: drive a running segd server with concurrent clients.

    python -m segd.server --address 127.0.0.1:50051 --demo 100k &     # a scratch server
    python -m segd.bench grpc --address 127.0.0.1:50051 --clients 16 --seconds 10

Measures, in this order (reads first, because the ingest phase changes the data):

1. gRPC overhead of a trivial call: ``Health/Check`` from one client, back to back
   (p50 / p99 latency) — the transport, no engine work;
2. Count of the saved reference segment (saved as ``bench_reference``, deleted at the
   end): ``--clients`` threads, each with its own channel, for ``--seconds``; QPS and
   p50 / p99 latency, and the machine stalls a separate probe process saw meanwhile
   (``segd.bench.stall_probe``: on a shared VM the whole machine is sometimes held up
   for tens of ms, and a p99 measured then is the machine's);
3. ingest over ``StreamEvents``: a third of the events each as typed ``EventBatch``
   messages (one ``Event`` per event), as typed ``EventColumns`` (columnar) and as
   Arrow IPC batches (requests built before the clock starts, so the rate is the
   server's and the transport's); rows per second. The events are demo events whose
   customer_ids get a ``grpcbench-`` prefix, re-timed in order into the minute after
   now, as live traffic arrives (``--keep-times`` keeps the demo's year of times and
   so measures the late-arrival merge path instead). They *add contacts* to the
   server: run this against a scratch server (``--skip-ingest`` leaves data alone).

Only loopback addresses are accepted: this is a load generator.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

SEGMENT = "bench_reference"
LIVE_WINDOW_S = 60
PREFIX = "grpcbench-"


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _percentile(sorted_s: list[float], q: float) -> float:
    if not sorted_s:
        return float("nan")
    k = min(len(sorted_s) - 1, max(0, round(q * (len(sorted_s) - 1))))
    return sorted_s[k]


def _latency(samples: list[float]) -> dict:
    s = sorted(samples)
    return {
        "calls": len(s),
        "p50_ms": round(_percentile(s, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(s, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(s) * 1000, 3) if s else None,
    }


def trivial_overhead(client, seconds: float) -> dict:
    """Health/Check back to back from one client."""
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        client.health()
        samples.append(time.perf_counter() - t0)
    return {"call": "grpc.health.v1.Health/Check"} | _latency(samples)


def count_qps(
    address, token, clients: int, seconds: float, now, processes: int = 1
) -> dict:
    """``clients`` threads, one channel each, counting the saved segment for ``seconds``.

    With ``processes`` > 1 the clients are spread over that many client processes, so
    the latencies measured are the server's, not the GIL contention of 16 client threads
    in one Python process (which shares the same 2 cores as the server).
    """
    if processes > 1:
        return _count_qps_processes(address, token, clients, seconds, now, processes)
    latencies, errors, counts, elapsed = _count_loop(
        address, token, clients, seconds, now, None
    )
    return _count_record(clients, elapsed, latencies, errors, counts, 1)


def _count_qps_processes(
    address, token, clients: int, seconds: float, now, processes: int
) -> dict:
    import multiprocessing

    share = [clients // processes + (k < clients % processes) for k in range(processes)]
    share = [n for n in share if n]
    start_at = time.time() + 3.0 + 0.5 * len(share)  # every process connected by then
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with gRPC threads
    with ctx.Pool(len(share)) as pool:
        parts = pool.starmap(
            _count_loop, [(address, token, n, seconds, now, start_at) for n in share]
        )
    latencies = [x for p in parts for x in p[0]]
    errors = [e for p in parts for e in p[1]]
    counts = set().union(*(p[2] for p in parts))
    elapsed = max(p[3] for p in parts)
    return _count_record(clients, elapsed, latencies, errors, counts, len(share))


def _count_record(clients, elapsed, flat, errors, counts, processes) -> dict:
    return {
        "segment": SEGMENT,
        "clients": clients,
        "client_processes": processes,
        "seconds": round(elapsed, 3),
        "qps": round(len(flat) / elapsed, 1) if elapsed else None,
        "count": sorted(counts),
        "errors": errors[:5],
    } | _latency(flat)


def _count_loop(address, token, clients: int, seconds: float, now, start_at):
    """Run ``clients`` Count threads in this process; (latencies, errors, counts,
    elapsed). ``start_at`` (a wall-clock time) lines up several client processes."""
    import grpc

    from segd.server.client import SegdClient
    from segd.timeutil import datetime_to_ms
    from segd.v1 import segments_pb2

    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    counts: set[int] = set()
    start = threading.Barrier(clients + 1)

    request = segments_pb2.CountRequest(
        segment=SEGMENT, now_ms=0 if now is None else datetime_to_ms(now)
    )
    metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def loop(k: int) -> None:
        with SegdClient(address, token=token) as c:
            c.wait_ready(10)
            # The client's own CPU shares the server's 2 cores, so each call is the
            # bare stub call: one request message built once (serialised per call by
            # the stub, as any client does), no retry wrapper, no result object.
            count_call = c.segments_stub.Count
            start.wait()
            end = time.perf_counter() + seconds
            lat = latencies[k]
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    reply = count_call(request, timeout=30.0, metadata=metadata)
                except grpc.RpcError as exc:  # reported, ends this client
                    errors.append(f"client {k}: {exc.code().name}: {exc.details()}")
                    return
                lat.append(time.perf_counter() - t0)
                counts.add(reply.count)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return [x for lst in latencies for x in lst], errors, counts, elapsed


def _events(contacts: int):
    """Demo events re-timed into one minute from now, in order, as live traffic arrives.

    Live events come at the end of the log; a year-long batch would instead take the
    late-arrival merge path (rows after its earliest time move), which is a different
    measurement (``--keep-times``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from segd.datagen import generate

    events = generate(contacts, seed=7).events
    ids = pc.binary_join_element_wise(
        PREFIX, events["customer_id"].cast(pa.string()), ""
    )
    return events.set_column(0, "customer_id", ids).combine_chunks()


def _retime(events, seconds: int = LIVE_WINDOW_S):
    """Map the (sorted) event times onto [now, now + seconds), keeping their order."""
    import pyarrow as pa

    ts = events["ts"].cast(pa.int64()).to_numpy()
    lo, span = ts.min(), max(int(ts.max() - ts.min()), 1)
    start = int(time.time())
    live = start + (ts - lo) * seconds // span
    col = pa.array(live, type=pa.timestamp("s", tz="UTC"))
    return events.set_column(events.schema.get_field_index("ts"), "ts", col)


def _typed_requests(table, batch_rows: int) -> list:
    """IngestEventsRequest(events=EventBatch) messages, ``batch_rows`` events each."""
    from segd.v1 import ingest_pb2

    cols = table.to_pydict()
    props = ("phrase", "advertiser", "campaign", "ad", "channel")
    events = []
    for i in range(table.num_rows):
        ev = ingest_pb2.Event(
            customer_id=cols["customer_id"][i],
            ts_ms=int(cols["ts"][i].timestamp() * 1000),
            type=cols["type"][i],
            item_id=cols["item_id"][i] or "",
            order_id=cols["order_id"][i] or "",
        )
        if cols["amount"][i] is not None:
            ev.amount = cols["amount"][i]
        for p in props:
            if cols[p][i] is not None:
                ev.properties[p] = cols[p][i]
        events.append(ev)
    return [
        ingest_pb2.IngestEventsRequest(
            events=ingest_pb2.EventBatch(events=events[i : i + batch_rows])
        )
        for i in range(0, len(events), batch_rows)
    ]


def _columns_requests(table, batch_rows: int) -> list:
    """IngestEventsRequest(columns=EventColumns) messages, ``batch_rows`` events each."""
    from segd.server.client import to_event_columns
    from segd.v1 import ingest_pb2

    return [
        ingest_pb2.IngestEventsRequest(
            columns=to_event_columns(table.slice(i, batch_rows))
        )
        for i in range(0, table.num_rows, batch_rows)
    ]


def _arrow_requests(table, batch_rows: int) -> list:
    from segd.server.client import to_arrow_ipc
    from segd.v1 import ingest_pb2

    return [
        ingest_pb2.IngestEventsRequest(
            arrow_ipc=to_arrow_ipc(table.slice(i, batch_rows))
        )
        for i in range(0, table.num_rows, batch_rows)
    ]


def stream_rate(client, token, requests: list, rows: int) -> dict:
    """Send pre-built requests over one StreamEvents stream; rows per second."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    t0 = time.perf_counter()
    acked = sum(
        ack.rows
        for ack in client.ingest_stub.StreamEvents(iter(requests), metadata=metadata)
    )
    elapsed = time.perf_counter() - t0
    return {
        "rows": acked,
        "batches": len(requests),
        "seconds": round(elapsed, 3),
        "rows_per_s": round(acked / elapsed) if elapsed else None,
        "complete": acked == rows,
    }


def ingest(
    client, token, contacts: int, batch_rows: int, say, keep_times: bool = False
) -> dict:
    say(f"ingest: generating demo events for {contacts:,} contacts")
    table = _events(contacts)
    if not keep_times:
        table = _retime(table)
    third = table.num_rows // 3
    typed_part = table.slice(0, third)
    columns_part = table.slice(third, third)
    arrow_part = table.slice(2 * third)
    say(
        f"ingest: building {third:,} typed events, {third:,} typed columnar rows and "
        f"{arrow_part.num_rows:,} Arrow rows"
    )
    typed = _typed_requests(typed_part, batch_rows)
    columns = _columns_requests(columns_part, batch_rows)
    arrow = _arrow_requests(arrow_part, batch_rows)
    say("ingest: streaming typed EventBatch messages")
    out: dict[str, Any] = {"typed": stream_rate(client, token, typed, third)}
    say("ingest: streaming typed EventColumns messages")
    out["columns"] = stream_rate(client, token, columns, third)
    say("ingest: streaming Arrow IPC batches")
    out["arrow"] = stream_rate(client, token, arrow, arrow_part.num_rows)
    out["batch_rows"] = batch_rows
    out["times"] = (
        "demo times (a year, late arrivals)"
        if keep_times
        else (f"live: re-timed into {LIVE_WINDOW_S} s from now, in order")
    )
    return out


def _parser(prog: str = "python -m segd.bench grpc") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Load-test a running segd server (loopback only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--address", default="127.0.0.1:50051", help="HOST:PORT (loopback)")
    p.add_argument(
        "--token", default=None, help="bearer token, if the server wants one"
    )
    p.add_argument("--clients", type=int, default=16, help="concurrent Count clients")
    p.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="spread the Count clients over this many processes (1: threads of this "
        "process, whose GIL then adds to the latencies measured)",
    )
    p.add_argument("--seconds", type=float, default=10.0, help="Count phase length")
    p.add_argument(
        "--overhead-seconds", type=float, default=2.0, help="trivial-call phase length"
    )
    p.add_argument(
        "--ingest-contacts",
        default="10k",
        help="demo scale of the ingested events (~20 events per contact)",
    )
    p.add_argument("--batch-rows", type=int, default=10_000, help="events per message")
    p.add_argument("--skip-ingest", action="store_true", help="do not append events")
    p.add_argument(
        "--keep-times",
        action="store_true",
        help="ingest with the demo's year-long times (late-arrival merges) instead of "
        "live times (one minute from now, in order)",
    )
    p.add_argument(
        "--now",
        default=None,
        help="ISO instant relative periods resolve against (default: the server's "
        "clock; `python -m segd.server --demo N` data ends at the current hour)",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON record")
    p.add_argument("--results-dir", default=None, help="default bench/results")
    return p


def _render(rec: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"segd over gRPC at {rec['address']}")
    for h in ("measure", "value"):
        t.add_column(h)
    o, c = rec["trivial_call"], rec["count"]
    t.add_row(
        "trivial call (Health/Check)", f"p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms"
    )
    t.add_row(
        f"Count '{SEGMENT}', {c['clients']} clients",
        f"{c['qps']} QPS, p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, "
        f"count {c['count']}",
    )
    stalls = c.get("machine_stalls")
    if stalls:
        t.add_row(
            "machine stalls during Count (probe)",
            f"{stalls['stalls']} wake-ups > 15 ms late, longest {stalls['longest_ms']} "
            f"ms, {stalls['total_ms']} ms in all"
            + (" (a quiet machine has none)" if stalls["stalls"] else ""),
        )
    for kind in ("typed", "columns", "arrow"):
        if rec.get("ingest"):
            r = rec["ingest"][kind]
            t.add_row(
                f"StreamEvents ({kind})",
                f"{r['rows_per_s']:,} events/s ({r['rows']:,} in {r['seconds']} s)",
            )
    Console().print(t)


def main(
    argv: Sequence[str] | None = None, prog: str = "python -m segd.bench grpc"
) -> int:
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if not _loopback(args.address):
        parser.error(f"--address {args.address!r}: only loopback addresses are allowed")
    if args.clients < 1 or args.seconds <= 0:
        parser.error("--clients must be >= 1 and --seconds > 0")
    if not 1 <= args.client_processes <= args.clients:
        parser.error("--client-processes must be between 1 and --clients")
    from rich.console import Console

    from segd.bench import machine
    from segd.bench.queries import reference
    from segd.bench.stall_probe import StallProbe
    from segd.datagen import DEFAULT_NOW, parse_scale
    from segd.server.client import SegdClient, SegdRpcError

    err = Console(stderr=True)
    now = None  # the server's clock (segctl serve --demo data ends at the current hour)
    if args.now:
        now = datetime.fromisoformat(args.now.replace("Z", "+00:00"))
        now = now if now.tzinfo else now.replace(tzinfo=UTC)
    rec: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "address": args.address,
        "now": now.isoformat() if now else "server clock",
        "machine": machine.facts(),
    }
    try:
        with SegdClient(args.address, token=args.token) as client:
            err.log(f"connecting to {args.address}")
            client.wait_ready(10)
            err.log(f"trivial calls for {args.overhead_seconds}s")
            rec["trivial_call"] = trivial_overhead(client, args.overhead_seconds)
            try:
                client.delete_segment(SEGMENT)
            except SegdRpcError:
                pass
            client.create_segment(SEGMENT, reference(now or DEFAULT_NOW).dsl)
            try:
                err.log(f"Count '{SEGMENT}': {args.clients} clients, {args.seconds}s")
                # the probe starts first and ends after: it covers the whole phase
                with StallProbe(
                    args.seconds + 2 + 3.0 * args.client_processes
                ) as probe:
                    rec["count"] = count_qps(
                        args.address,
                        args.token,
                        args.clients,
                        args.seconds,
                        now,
                        processes=args.client_processes,
                    )
                rec["count"]["machine_stalls"] = probe.result
            finally:
                client.delete_segment(SEGMENT)
            if not args.skip_ingest:
                rec["ingest"] = ingest(
                    client,
                    args.token,
                    parse_scale(args.ingest_contacts),
                    args.batch_rows,
                    err.log,
                    keep_times=args.keep_times,
                )
    except SegdRpcError as exc:
        err.print(f"[bold red]gRPC benchmark failed: {exc}[/bold red]")
        return 1
    from pathlib import Path

    from segd.bench.report import RESULTS_DIR

    out = Path(args.results_dir) if args.results_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{rec['date'][:10]}-grpc.json"
    path.write_text(json.dumps(rec, indent=2) + "\n")
    err.log(f"wrote {path}")
    if args.json:
        print(json.dumps(rec, indent=2))
    else:
        _render(rec)
    if rec["count"]["errors"]:
        err.print(f"[bold red]Count errors: {rec['count']['errors']}[/bold red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
