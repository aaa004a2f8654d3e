"""``python -m segd.bench wal``: ingest throughput per ``--fsync`` mode, WAL replay rate,
snapshot time and size (issue 10's performance section; docs/storage.md).

For each mode a fresh server (``python -m segd.server --data-dir TMP --fsync MODE``) is
started on a loopback port; ``--clients`` threads each send ``--batches`` IngestEvents
calls of ``--batch-rows`` events (Arrow IPC, built before the clock starts). Then the
server is stopped with SIGKILL (no shutdown snapshot) and the directory is opened with
``Engine.open`` to time the replay of the whole log; finally a snapshot is taken.

    python -m segd.bench wal                       # always, interval, off; 8 clients
    python -m segd.bench wal --fsync always --clients 8 --batches 50 --json
    python -m segd.bench wal restart --contacts 2m # load, snapshot, restart; RSS
    python -m segd.bench wal stall --contacts 1m   # write stall: forked vs in process
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

BASE_TS = 1_735_689_600


def _batches(clients: int, batches: int, rows: int) -> list[list[bytes]]:
    """Pre-built Arrow IPC payloads: client k, batch b holds contacts unique to it."""
    import numpy as np
    import pyarrow as pa

    from segd.server.client import to_arrow_ipc

    out = []
    rng = np.random.default_rng(10)
    for k in range(clients):
        mine = []
        for b in range(batches):
            n = np.arange(rows)
            table = pa.table(
                {
                    "customer_id": pa.array(
                        [f"k{k}-c{int(x)}" for x in rng.integers(0, 50_000, rows)]
                    ),
                    "ts": pa.array(BASE_TS + b * rows + n, pa.int64()).cast(
                        pa.timestamp("s", tz="UTC")
                    ),
                    "type": pa.array(np.where(n % 10 == 0, "order", "view")),
                    "amount": pa.array(
                        np.full(rows, 10.0), mask=n % 10 != 0
                    ),  # NULL but for orders
                }
            )
            mine.append(to_arrow_ipc(table))
        out.append(mine)
    return out


def run_mode(mode: str, args, payloads, say) -> dict:
    from segd.server.client import SegdClient
    from segd.v1 import ingest_pb2

    tmp = Path(tempfile.mkdtemp(prefix=f"segd-bench-wal-{mode}-"))
    data = tmp / "data"
    try:
        log_path = tmp / "server.log"
        proc, address = _start_info(data, mode, args.fsync_interval_ms, log_path)
        try:
            with SegdClient(address) as c:
                c.wait_ready(60)
            say(f"{mode}: {args.clients} clients x {args.batches} x {args.batch_rows}")
            errors: list[str] = []
            latencies: list[float] = []
            lock = threading.Lock()
            barrier = threading.Barrier(args.clients + 1)

            def client(k: int) -> None:
                with SegdClient(address, timeout=120) as c:
                    reqs = [
                        ingest_pb2.IngestEventsRequest(
                            arrow_ipc=p, idempotency_key=f"{mode}-{k}-{b}"
                        )
                        for b, p in enumerate(payloads[k])
                    ]
                    barrier.wait()
                    for req in reqs:
                        t = time.perf_counter()
                        try:
                            c.call(c.ingest_stub.IngestEvents, req)
                        except Exception as exc:  # noqa: BLE001 - reported
                            with lock:
                                errors.append(str(exc))
                            return
                        with lock:
                            latencies.append(time.perf_counter() - t)

            threads = [
                threading.Thread(target=client, args=(k,)) for k in range(args.clients)
            ]
            for t in threads:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
            with SegdClient(address) as c:
                stats = c.stats()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        rows = args.clients * args.batches * args.batch_rows
        latencies.sort()
        out = {
            "events": rows,
            "seconds": round(elapsed, 3),
            "events_per_s": round(rows / elapsed) if elapsed else None,
            "batch_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2)
            if latencies
            else None,
            "batch_p99_ms": round(
                latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2
            )
            if latencies
            else None,
            "server_events": stats["events"],
            "wal_bytes": sum(p.stat().st_size for p in (data / "wal").iterdir()),
            "errors": errors[:3],
        }
        say(f"{mode}: replaying the log")
        from segd import Engine

        t0, c0 = time.perf_counter(), time.process_time()
        eng = Engine.open(data, fsync="off")
        replay = time.perf_counter() - t0
        replay_cpu = time.process_time() - c0
        out["replay_seconds"] = round(replay, 3)
        out["replay_events_per_s"] = round(rows / replay) if replay else None
        # CPU time too: on a shared machine the wall clock counts other people's work
        out["replay_cpu_seconds"] = round(replay_cpu, 3)
        out["replay_events_per_cpu_s"] = (
            round(rows / replay_cpu) if replay_cpu else None
        )
        out["replayed_records"] = eng.recovery["replayed_records"]
        eng.snapshot_background = False
        t0 = time.perf_counter()
        info = eng.snapshot()
        out["snapshot_seconds"] = round(time.perf_counter() - t0, 3)
        out["snapshot_bytes"] = info.bytes
        eng.close()
        t0 = time.perf_counter()
        eng = Engine.open(data, fsync="off")
        out["restart_from_snapshot_seconds"] = round(time.perf_counter() - t0, 3)
        eng.close()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _start_info(
    data: Path, mode: str, interval_ms: int, log_path: Path, env: dict | None = None
):
    env = {**os.environ, **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segd.server", "--address", "127.0.0.1:0",
             "--data-dir", str(data), "--fsync", mode,
             "--fsync-interval-ms", str(interval_ms)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    end = time.monotonic() + 120
    while time.monotonic() < end:
        m = re.search(r"msg=ready .*\bport=(\d+)", log_path.read_text())
        if m:
            return proc, f"127.0.0.1:{m.group(1)}"
        if proc.poll() is not None:
            raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start in 120 s")


def _event_payloads(n: int, rows: int, tag: str) -> list[bytes]:
    """`n` Arrow IPC IngestEvents payloads of `rows` view events for fresh contacts,
    stamped now: live traffic appends at the end of the logs (an old time stamp would
    take the late-event merge path instead)."""
    import numpy as np
    import pyarrow as pa

    from segd.server.client import to_arrow_ipc

    now = int(time.time())
    out = []
    for b in range(n):
        i = np.arange(rows)
        out.append(
            to_arrow_ipc(
                pa.table(
                    {
                        "customer_id": pa.array([f"{tag}{b}-{j}" for j in range(rows)]),
                        "ts": pa.array(now - rows + i, pa.int64()).cast(
                            pa.timestamp("s", tz="UTC")
                        ),
                        "type": pa.array(["view"] * rows),
                    }
                )
            )
        )
    return out


def write_stall(
    address: str,
    snapshot: Callable[[], object],
    *,
    writers: int = 2,
    rows: int = 100,
    before_s: float = 1.0,
    after_s: float = 1.0,
    token: str | None = None,
) -> dict:
    """Writes acknowledged while a snapshot is taken, and the longest write stall.

    `writers` clients stream IngestEvents calls of `rows` events back to back; after
    `before_s` the snapshot is taken by `snapshot()` (an RPC, or ``segctl snapshot``),
    and the writers go on `after_s` after it returns. ``max_stall_s`` is the longest
    latency of a call in flight during the snapshot: how long the engine held writers
    (the fork, or the whole write in process); ``acks_during`` counts the calls
    acknowledged while the snapshot ran."""
    from segd.server.client import SegdClient
    from segd.v1 import ingest_pb2

    payloads = _event_payloads(400, rows, "stall-")
    stop = threading.Event()
    calls: list[tuple[float, float]] = []  # (sent, acknowledged), perf_counter
    errors: list[str] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        with SegdClient(address, timeout=120, token=token) as c:
            b = 0
            while not stop.is_set():
                req = ingest_pb2.IngestEventsRequest(
                    arrow_ipc=payloads[(k * 97 + b) % len(payloads)]
                )
                t = time.perf_counter()
                try:
                    c.call(c.ingest_stub.IngestEvents, req)
                except Exception as exc:  # noqa: BLE001 - reported
                    with lock:
                        errors.append(str(exc))
                    return
                with lock:
                    calls.append((t, time.perf_counter()))
                b += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    try:
        # Warm up first: the first writes after a restart from a snapshot copy the
        # memory-mapped arrays they grow (docs/storage.md), a cost of the restore, not of
        # the snapshot measured here.
        end = time.perf_counter() + max(before_s, 60.0)
        time.sleep(before_s)
        while time.perf_counter() < end and not errors:
            with lock:
                recent = sorted(b - a for a, b in calls[-10:])
            if len(recent) == 10 and recent[-1] < 5 * recent[len(recent) // 2]:
                break
            time.sleep(0.1)
        t0 = time.perf_counter()
        snapshot()
        t1 = time.perf_counter()
        time.sleep(after_s)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    during = [(a, b) for a, b in calls if b >= t0 and a <= t1]
    before = sorted(b - a for a, b in calls if b < t0)
    return {
        "snapshot_seconds": round(t1 - t0, 3),
        "acks_during": sum(1 for _, b in during if b <= t1),
        "max_stall_s": round(max((b - a for a, b in during), default=0.0), 3),
        "latency_before_p50_ms": round(before[len(before) // 2] * 1000, 2)
        if before
        else None,
        "calls": len(calls),
        "errors": errors[:3],
    }


# -- restart from a snapshot, and the write stall of a snapshot, at scale --------------


def _rss() -> dict:
    """Resident and peak resident memory of this process, in MB (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = (
                int(value.split()[0]) // 1024
            )
    return out


def _suite_counts(eng, now) -> tuple[dict, float]:
    """Counts of the bench queries (creating their saved segments first if missing).
    Queries that compute RFM first (``rfm_as_of_now``) are left out: that computation is
    a logged write, and these counts compare states across restarts without writing."""
    from segd.bench.queries import suite

    queries = [q for q in suite(now) if not q.skip and not q.rfm_as_of_now]
    existing = {s.name for s in eng.list_segments()}
    for q in queries:
        for name, dsl in q.segments:
            if name not in existing:
                eng.create_segment(name, dsl, now=now)
                existing.add(name)
    t0 = time.perf_counter()
    counts = {q.name: eng.segment(q.dsl, now, cache=False).count() for q in queries}
    return counts, time.perf_counter() - t0


def phase_load(data: Path, dataset_dir: Path) -> dict:
    """Bulk-load the cached Parquet dataset into a durable engine (logged), run the
    queries, take a snapshot (forked writer), close. One process: its RSS is the
    original load's."""
    import gc

    import pyarrow as pa

    from segd import Engine
    from segd.bench.dataset import _dataset, _read_meta

    ds = _dataset(dataset_dir, _read_meta(dataset_dir) or {})
    eng = Engine.open(data, fsync="off")
    t0 = time.perf_counter()
    ds.load_into(eng)
    out: dict = {"load_seconds": round(time.perf_counter() - t0, 2)}
    gc.collect()
    pa.default_memory_pool().release_unused()
    stats = eng.stats()
    out.update(contacts=stats["contacts"], events=stats["events"])
    out["after_load"] = _rss()
    counts, q_s = _suite_counts(eng, ds.now)
    out.update(counts=counts, queries_seconds=round(q_s, 2), after_queries=_rss())
    info = eng.snapshot()
    out["snapshot"] = {
        "seconds": round(info.seconds, 2),
        "engine_held_seconds": round(info.pause_seconds, 3),
        "bytes": info.bytes,
        "files": info.files,
        "forked": eng.snapshot_background is not False,
    }
    t0 = time.perf_counter()
    eng.close()
    out["close_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def phase_restart(data: Path, dataset_dir: Path) -> dict:
    """Open the data directory (newest snapshot + the log after it), run the queries."""
    from segd import Engine
    from segd.bench.dataset import _dataset, _read_meta

    ds = _dataset(dataset_dir, _read_meta(dataset_dir) or {})
    before = _rss()
    t0 = time.perf_counter()
    eng = Engine.open(data, fsync="off")
    out: dict = {"restart_seconds": round(time.perf_counter() - t0, 2)}
    out["recovery"] = eng.recovery
    out["before_open"] = before
    out["after_restart"] = _rss()
    counts, q_s = _suite_counts(eng, ds.now)
    out.update(counts=counts, queries_seconds=round(q_s, 2), after_queries=_rss())
    counts, q_s = _suite_counts(eng, ds.now)
    out["queries_second_run_seconds"] = round(q_s, 2)
    eng.close()
    return out


def _phase(name: str, data: Path, dataset_dir: Path, say) -> dict:
    """Run a phase in a fresh interpreter (so its RSS is its own); its JSON result."""
    say(f"{name} phase")
    proc = subprocess.run(
        [sys.executable, "-m", "segd.bench", "wal", "phase", name,
         "--data-dir", str(data), "--dataset-dir", str(dataset_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{name} phase failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _dataset_for(args, say) -> Path:
    from segd.bench.dataset import default_cache_dir, ensure_dataset
    from segd.datagen import parse_scale

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    contacts = parse_scale(args.contacts)
    say(f"dataset: {contacts:,} contacts (cached under {root})")
    ds, _ = ensure_dataset(contacts, root=root)
    return ds.directory


def run_restart(args, say) -> dict:
    """Load, snapshot, restart: times, sizes and RSS (docs/storage.md)."""
    dataset_dir = _dataset_for(args, say)
    tmp = Path(tempfile.mkdtemp(prefix="segd-bench-restart-", dir=args.work_dir))
    try:
        data = tmp / "data"
        load = _phase("load", data, dataset_dir, say)
        restart = _phase("restart", data, dataset_dir, say)
        snaps = data / "snapshots"
        rec = {
            "load": load,
            "restart": restart,
            "snapshot_dir_bytes": sum(
                f.stat().st_size for f in snaps.rglob("*") if f.is_file()
            ),
            "same_counts": load["counts"] == restart["counts"],
        }
        return rec
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_stall(args, say) -> dict:
    """The longest write stall while a snapshot is written, forked vs in process, on
    a server holding the dataset (writes stream from `--clients` clients)."""
    from segd.server.client import SegdClient

    dataset_dir = _dataset_for(args, say)
    tmp = Path(tempfile.mkdtemp(prefix="segd-bench-stall-", dir=args.work_dir))
    try:
        data = tmp / "data"
        _phase("load", data, dataset_dir, say)  # the dataset, snapshotted
        out: dict = {}
        for mode, fork_support in (("forked", "false"), ("in-process", "true")):
            log_path = tmp / f"server-{mode}.log"
            env = {"GRPC_ENABLE_FORK_SUPPORT": fork_support}
            proc, address = _start_info(data, "always", 100, log_path, env=env)
            try:
                if f"snapshots={mode}" not in log_path.read_text():
                    raise RuntimeError(f"the server did not write {mode}")

                def snapshot(address: str = address) -> None:
                    with SegdClient(address, timeout=600) as c:
                        c.snapshot()

                for _ in range(args.rounds):
                    say(f"{mode}: snapshot while {args.clients} clients write")
                    res = write_stall(
                        address, snapshot, writers=args.clients, rows=args.batch_rows
                    )
                    out.setdefault(mode, []).append(res)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _scale_parser(name: str, about: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m segd.bench wal {name}",
        description=about,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--contacts", default="1m", help="dataset scale: 100k, 2m, 10m ...")
    p.add_argument("--cache-dir", default=None, help="dataset cache (segd.bench)")
    p.add_argument("--work-dir", default=None, help="where the data directory goes")
    p.add_argument("--results-dir", default=None, help="default bench/results")
    return p


def main_scale(name: str, argv: Sequence[str]) -> int:
    """``wal restart`` and ``wal stall`` (and the internal ``wal phase``)."""
    if name == "phase":
        p = argparse.ArgumentParser(prog="python -m segd.bench wal phase")
        p.add_argument("which", choices=("load", "restart"))
        p.add_argument("--data-dir", required=True)
        p.add_argument("--dataset-dir", required=True)
        a = p.parse_args(argv)
        fn = phase_load if a.which == "load" else phase_restart
        print(json.dumps(fn(Path(a.data_dir), Path(a.dataset_dir))))
        return 0
    if name == "restart":
        p = _scale_parser(
            "restart",
            "Bulk-load the bench dataset into a data directory, snapshot it, restart "
            "from the snapshot: load / snapshot / restart times, snapshot size, RSS.",
        )
    else:
        p = _scale_parser(
            "stall",
            "Stream writes through gRPC while the server writes a snapshot: the "
            "longest write stall with a forked writer and with the in-process one.",
        )
        p.add_argument("--clients", type=int, default=2, help="writing clients")
        p.add_argument("--batch-rows", type=int, default=100, help="events per call")
        p.add_argument("--rounds", type=int, default=2, help="snapshots per mode")
    args = p.parse_args(argv)
    from rich.console import Console

    from segd.bench import machine

    err = Console(stderr=True)
    rec: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "contacts_arg": args.contacts,
        "machine": machine.facts(),
    }
    rec.update(
        run_restart(args, err.log) if name == "restart" else run_stall(args, err.log)
    )
    from segd.bench.report import RESULTS_DIR

    out = Path(args.results_dir) if args.results_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{rec['date'][:10]}-wal-{name}-{args.contacts}.json"
    path.write_text(json.dumps(rec, indent=2) + "\n")
    err.log(f"wrote {path}")
    print(json.dumps(rec, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m segd.bench wal",
        description="Ingest per --fsync mode from concurrent clients; WAL replay rate; "
        "snapshot time and size.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--fsync", default="always,interval,off", help="modes to run")
    p.add_argument("--fsync-interval-ms", type=int, default=100)
    p.add_argument("--clients", type=int, default=8, help="concurrent clients")
    p.add_argument("--batches", type=int, default=50, help="calls per client")
    p.add_argument("--batch-rows", type=int, default=1000, help="events per call")
    p.add_argument("--json", action="store_true", help="print only the JSON record")
    p.add_argument("--results-dir", default=None, help="default bench/results")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["restart"], ["stall"], ["phase"]):
        return main_scale(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    from rich.console import Console

    from segd.bench import machine

    err = Console(stderr=True)
    modes = [m.strip() for m in args.fsync.split(",") if m.strip()]
    err.log("building batches")
    payloads = _batches(args.clients, args.batches, args.batch_rows)
    rec: dict = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "clients": args.clients,
        "batches_per_client": args.batches,
        "batch_rows": args.batch_rows,
        "machine": machine.facts(),
        "modes": {},
    }
    for mode in modes:
        rec["modes"][mode] = run_mode(mode, args, payloads, err.log)
    if "always" in rec["modes"] and "off" in rec["modes"]:
        a, o = rec["modes"]["always"], rec["modes"]["off"]
        if a["events_per_s"] and o["events_per_s"]:
            rec["always_vs_off"] = round(o["events_per_s"] / a["events_per_s"], 2)
    from segd.bench.report import RESULTS_DIR

    out = Path(args.results_dir) if args.results_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{rec['date'][:10]}-wal.json"
    path.write_text(json.dumps(rec, indent=2) + "\n")
    err.log(f"wrote {path}")
    if args.json:
        print(json.dumps(rec, indent=2))
    else:
        for mode, r in rec["modes"].items():
            print(
                f"{mode:9} {r['events_per_s']:>10,} events/s  p50 {r['batch_p50_ms']} ms"
                f"  p99 {r['batch_p99_ms']} ms  replay {r['replay_events_per_s']:,}"
                f" events/s ({r['replay_events_per_cpu_s']:,} per CPU s)  snapshot {r['snapshot_seconds']} s"
                f" {r['snapshot_bytes']:,} B  restart {r['restart_from_snapshot_seconds']} s"
                + (f"  errors {r['errors']}" if r["errors"] else "")
            )
        if "always_vs_off" in rec:
            print(f"off / always = {rec['always_vs_off']}x (target <= 2x)")
    return 1 if any(r["errors"] for r in rec["modes"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
