"""``segctl serve`` / ``python -m segd.server``: load, serve, stop gracefully on SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, TextIO

from segd import hugepages
from segd.server.app import RPC_THREAD_PREFIX, App, StartupError, build_app
from segd.server.logfmt import configure_logging, kv
from segd.server.settings import DEFAULT_ADDRESS, Settings, env_defaults

log = logging.getLogger("segd.server")


def parse_scale(text: str) -> int:
    """``100k`` -> 100000, ``1m`` -> 1000000, ``2500`` -> 2500 (argparse type of --demo;
    segd.datagen is imported only when --demo is given)."""
    from segd.datagen import parse_scale as datagen_parse_scale

    try:
        return datagen_parse_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_snapshot_every(text: str) -> str:
    """--snapshot-every: a number with s / m / h / d is a period (``10m``), a bare
    number a count of log records (``5000000``) (argparse type)."""
    t = text.strip().lower()
    try:
        snapshot_schedule(t)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return t


def snapshot_schedule(text: str | None) -> tuple[float | None, int | None]:
    """(seconds, records) of a --snapshot-every value; (None, None) for none."""
    if not text:
        return None, None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            seconds = float(text[:-1]) * units[text[-1]]
            if seconds <= 0:
                raise ValueError
            return seconds, None
        records = int(text.replace("_", ""))
        if records <= 0:
            raise ValueError
        return None, records
    except ValueError:
        raise ValueError(
            f"expected a period like 30s, 10m, 1h or a record count like 5000000, "
            f"got {text!r}"
        ) from None


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The server's flags (shared by ``segctl serve`` and ``python -m segd.server``)."""
    # SUPPRESS: an option left out here leaves the namespace alone, so `segctl
    # --address X serve` (the option written before the command) still applies.
    p.add_argument(
        "--address",
        default=argparse.SUPPRESS,
        help=f"HOST:PORT to listen on; port 0 picks a free one "
        f"(env SEGD_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    p.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="bearer token every call must carry (env SEGD_TOKEN; default: no auth)",
    )
    p.add_argument(
        "--tls-cert", help="PEM certificate chain (with --tls-key; default: plaintext)"
    )
    p.add_argument("--tls-key", help="PEM private key (with --tls-cert)")
    p.add_argument(
        "--data-dir",
        help="directory of the write-ahead log and snapshots, created if missing "
        "(env SEGD_DATA_DIR; default ./segd-data; with --demo: in memory unless given)",
    )
    p.add_argument(
        "--in-memory",
        action="store_true",
        help="keep everything in memory: nothing is written, a restart loses it all",
    )
    p.add_argument(
        "--fsync",
        choices=["always", "interval", "off"],
        default=Settings.fsync,
        help="acknowledge writes once on disk (always: group commit), after at most "
        "--fsync-interval-ms (interval: a crash may lose that window) or never "
        "fsync (off: benchmarks) (default %(default)s)",
    )
    p.add_argument(
        "--fsync-interval-ms",
        type=int,
        default=Settings.fsync_interval_ms,
        help="fsync period of --fsync interval (default %(default)s)",
    )
    p.add_argument(
        "--snapshot-every",
        type=parse_snapshot_every,
        default=None,
        metavar="PERIOD|RECORDS",
        help="snapshot on a schedule: a time (30s, 10m, 1h) or a number of log "
        "records (5000000); always on graceful shutdown (default: no schedule)",
    )
    p.add_argument(
        "--recs-rebuild-s",
        type=float,
        default=Settings.recs_rebuild_s,
        metavar="SECONDS",
        help="rebuild the recommendation model this often, first at startup; 0: on "
        "demand only (default %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=Settings.workers,
        help="RPC worker threads; each open stream holds one (default %(default)s)",
    )
    p.add_argument(
        "--read-workers",
        type=int,
        default=Settings.read_workers,
        help="threads of the read lane (Count, Members, Sample, Get, health Check), "
        "apart from the shared pool; 0: no lane (default %(default)s)",
    )
    p.add_argument(
        "--result-cache",
        type=int,
        default=Settings.result_cache,
        help="segment results kept until the next write; 0 disables (default %(default)s)",
    )
    p.add_argument(
        "--max-message-mb",
        type=int,
        default=Settings.max_message_mb,
        help="largest request in MiB; bigger ones get RESOURCE_EXHAUSTED "
        "(default %(default)s)",
    )
    p.add_argument(
        "--demo",
        type=parse_scale,
        default=0,
        metavar="N",
        help="generate and load a demo dataset of N contacts (2000, 100k, 1m) "
        "before serving",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus /metrics on this port (0: any free; default off)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=Settings.grace_seconds,
        dest="grace_seconds",
        help="seconds in-flight calls get on SIGTERM (default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="(default %(default)s)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings and exit",
    )


def settings_from_args(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> Settings:
    """Flags over ``SEGD_*`` environment over defaults."""
    values: dict[str, Any] = env_defaults(environ)
    for key in ("address", "token", "tls_cert", "tls_key", "data_dir"):
        if getattr(args, key, None):
            values[key] = getattr(args, key)
    for key in (
        "in_memory",
        "fsync",
        "fsync_interval_ms",
        "snapshot_every",
        "workers",
        "read_workers",
        "max_message_mb",
        "result_cache",
        "demo",
        "metrics_port",
        "grace_seconds",
        "log_level",
        "recs_rebuild_s",
    ):
        values[key] = getattr(args, key)
    return Settings(**values)


def _stop_within(app: App, grace_seconds: float) -> bool:
    """Stop the server: in-flight calls get `grace_seconds`, then they are cancelled.

    Returns True when a handler thread is still busy after that (stuck in a request
    iterator of a broken stream, or in a long engine call): the RPC pool's threads are
    joined at interpreter exit, so ``serve`` then ends the process itself once the data
    is safe, instead of waiting for a second signal."""
    stopped = app.stop(grace_seconds)
    stopped.wait(grace_seconds + 1.0)
    deadline = time.monotonic() + 1.0
    busy = _rpc_threads()
    while busy and time.monotonic() < deadline:
        time.sleep(0.05)
        busy = _rpc_threads()
    if busy:
        log.warning(
            "request threads still busy after the grace period; exiting without them",
            extra=kv(threads=len(busy)),
        )
    return bool(busy)


def _rpc_threads() -> list[threading.Thread]:
    """RPC pool threads still inside a call. An idle pool thread waits in the work
    queue's C-level get(), so its innermost Python frame is the executor's ``_worker``."""
    frames = sys._current_frames()
    busy = []
    for t in threading.enumerate():
        if not (t.name.startswith(RPC_THREAD_PREFIX) and t.is_alive()):
            continue
        frame = frames.get(t.ident or -1)
        if frame is not None and frame.f_code.co_name != "_worker":
            busy.append(t)
    return busy


class _Interrupted(Exception):
    """A stop signal arrived before the server was ready."""


def demo_data(contacts: int, now: Any) -> Any:
    """The demo dataset of ``contacts`` contacts, ending at ``now``.

    Generated at ``datagen.DEFAULT_NOW`` and moved in time to end at `now` (events,
    registration times and birth dates shift together), so the data relative to `now` is
    the same on every day and at every hour: docs/segctl.md's figures hold whenever the
    demo starts, not only on the day they were written (a dataset generated *at* `now`
    would follow the calendar: weekdays, seasons, leap years).
    """
    import dataclasses

    import pyarrow as pa
    import pyarrow.compute as pc

    from segd.datagen import DEFAULT_NOW, generate

    data = generate(contacts=contacts, now=DEFAULT_NOW)
    shift_s = int(now.timestamp()) - int(DEFAULT_NOW.timestamp())
    if shift_s == 0:
        return data

    def moved(table: pa.Table, name: str) -> pa.Table:
        col = table.column(name)
        if pa.types.is_date32(col.type):  # whole days, as a birthday moves
            days = pc.add(
                col.cast(pa.int32()), pa.scalar(round(shift_s / 86_400), pa.int32())
            )
            new = days.cast(pa.date32())
        else:
            unit = col.type.unit
            step = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 10**9}[unit]
            new = pc.add(col.cast(pa.int64()), shift_s * step).cast(col.type)
        return table.set_column(table.schema.get_field_index(name), name, new)

    contacts_table = data.contacts
    for name in ("registered_at", "birth_date"):
        if name in contacts_table.column_names:
            contacts_table = moved(contacts_table, name)
    return dataclasses.replace(
        data,
        contacts=contacts_table,
        events=moved(data.events, "ts"),
        now=now,
    )


def _load_demo(engine: Any, contacts: int) -> Any:
    """Generate and load the demo dataset ending at the current second; returns its
    ``now`` (see demo_data): `in last 30 days` means what an operator expects."""
    from datetime import UTC, datetime

    now = datetime.now(UTC).replace(microsecond=0)
    data = demo_data(contacts, now)
    engine.load_items(data.items)
    engine.load_contacts(data.contacts)
    engine.load_events(data.events)
    return data.now


def _ready_fields(
    app: App, settings: Settings, engine: Any, load_seconds: float
) -> dict:
    stats = engine.stats()
    return {
        "address": f"{settings.host}:{app.port}",
        "port": app.port,
        "contacts": stats.get("contacts", 0),
        "events": stats.get("events", 0),
        "load_seconds": round(load_seconds, 3),
        "tls": bool(settings.tls_cert),
        "auth": bool(settings.token),
        "storage": settings.storage_dir or "memory",
        "fsync": settings.fsync if settings.storage_dir else None,
        "snapshots": _snapshot_mode(engine) if settings.storage_dir else None,
        "hugepages": hugepages.enabled(),
    }


def _snapshot_mode(engine: Any) -> str:
    """``forked`` (writers wait only for the fork) or ``in-process`` (writers wait for
    the whole write: gRPC's fork handlers are on, see segd.snapshot.fork_is_default)."""
    from segd import snapshot

    background = engine.snapshot_background
    if background is None:
        background = snapshot.fork_is_default()
    return "forked" if background else "in-process"


def _open_engine(settings: Settings) -> Any:
    """The engine the settings ask for: durable over the data directory, or in memory."""
    from segd import Engine

    storage = settings.storage_dir
    if storage is None:
        return Engine(result_cache_size=settings.result_cache)
    engine = Engine.open(
        storage,
        fsync=settings.fsync,
        fsync_interval_ms=settings.fsync_interval_ms,
        result_cache_size=settings.result_cache,
    )
    log.info("recovered", extra=kv(data_dir=storage, **(engine.recovery or {})))
    # Snapshots are written by a forked child (engine.snapshot_background stays None:
    # segd.snapshot forks where it is safe). `import segd` turned gRPC's fork handlers
    # off before gRPC was imported, so writers wait only for the fork, not the write.
    return engine


def _snapshot(engine: Any, why: str) -> None:
    """Take a snapshot, logging the outcome (never raises: the server keeps going)."""
    try:
        info = engine.snapshot()
    except ImportError:
        log.warning("snapshots are not available in this build", extra=kv(why=why))
        return
    except Exception as exc:  # noqa: BLE001 - reported, the log still holds everything
        log.error("snapshot failed", extra=kv(why=why, error=str(exc)))
        return
    log.info(
        "snapshot",
        extra=kv(
            why=why,
            wal_seq=getattr(info, "wal_seq", None),
            path=str(getattr(info, "path", "") or getattr(info, "directory", "")),
        ),
    )


def _snapshot_schedule_loop(
    engine: Any, every: str | None, stop: threading.Event
) -> None:
    seconds, records = snapshot_schedule(every)
    last_time, last_seq = time.monotonic(), engine._wal.last_seq
    tick = min(1.0, seconds) if seconds else 1.0
    while not stop.wait(tick):
        seq = engine._wal.last_seq
        due = (seconds is not None and time.monotonic() - last_time >= seconds) or (
            records is not None and seq - last_seq >= records
        )
        if due and seq != last_seq:
            _snapshot(engine, "schedule")
            last_time, last_seq = time.monotonic(), seq


def _ignore_file_size_signal() -> None:
    """A file-size limit (RLIMIT_FSIZE) then fails the log write with EFBIG, answered as
    RESOURCE_EXHAUSTED, instead of killing the server with SIGXFSZ."""
    try:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except (ValueError, AttributeError):  # not the main thread / not POSIX
        pass


def serve(settings: Settings, stderr: TextIO | None = None) -> int:
    """Run the server until SIGTERM / SIGINT; 0 on a clean stop, 1 if it cannot start."""
    configure_logging(settings.log_level, stderr)
    from segd.errors import SegdError

    _ignore_file_size_signal()
    engine = None
    try:
        engine = _open_engine(settings)
        app = build_app(settings, engine, serving=False)
        metrics_port = None
        if settings.metrics_port is not None:
            metrics_port = app.metrics.serve_http(settings.host, settings.metrics_port)
    except (StartupError, OSError, SegdError) as exc:
        log.error("cannot start", extra=kv(error=str(exc)))
        if engine is not None:
            engine.close()
        return 1
    app.server.start()
    log.info(
        "listening",
        extra=kv(
            address=f"{settings.host}:{app.port}",
            health="NOT_SERVING",
            metrics_port=metrics_port,
            workers=settings.workers,
            read_workers=settings.read_workers,
        ),
    )

    stop, ready = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("second signal: exiting without grace", extra=kv(signal=signum))
            os._exit(1)
        stop.set()
        if not ready.is_set():
            raise _Interrupted(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    stuck = False
    scheduler = None
    try:
        start = time.perf_counter()
        if settings.demo:
            if engine.stats()["contacts"] or engine.stats()["events"]:
                log.info(
                    "demo data not loaded: the data directory already holds data",
                    extra=kv(data_dir=settings.storage_dir),
                )
            else:
                log.info("generating demo data", extra=kv(contacts=settings.demo))
                demo_now = _load_demo(engine, settings.demo)
                now_s = (
                    int(demo_now.timestamp())
                    if hasattr(demo_now, "timestamp")
                    else None
                )
                log.info(
                    "demo data loaded", extra=kv(demo_now=demo_now, demo_now_s=now_s)
                )
        # Indexes that queries would otherwise build on first use are built before
        # `ready`: the first clients of a fresh server do not queue behind them.
        warm_t0 = time.perf_counter()
        warmed = engine.warm()
        if warmed:
            log.info(
                "indexes warmed",
                extra=kv(
                    event_types=len(warmed),
                    seconds=round(time.perf_counter() - warm_t0, 3),
                ),
            )
        # The loaded engine lives as long as the server: its objects are moved out of
        # the cycle collector's generations, so a full collection walks only what
        # calls allocate (before: tens of ms at a lookup's p99, bench/recs.py grpc).
        gc.collect()
        gc.freeze()
        if engine.durable and settings.snapshot_every:
            scheduler = threading.Thread(
                target=_snapshot_schedule_loop,
                args=(engine, settings.snapshot_every, stop),
                name="segd-snapshots",
                daemon=True,
            )
            scheduler.start()
        from segd.server.live_clock import live_clock_loop

        # Dynamic segments follow the wall clock (segd.live): advance every second.
        threading.Thread(
            target=live_clock_loop,
            args=(engine, stop),
            name="segd-clock",
            daemon=True,
        ).start()
        if settings.recs_rebuild_s > 0:
            from segd.server.recs_schedule import recs_schedule_loop

            threading.Thread(
                target=recs_schedule_loop,
                args=(engine, settings.recs_rebuild_s, stop),
                name="segd-recs-rebuild",
                daemon=True,
            ).start()
        from segd.server.rfm_schedule import rfm_schedule_loop

        threading.Thread(
            target=rfm_schedule_loop,
            args=(engine, stop),
            name="segd-rfm-daily",
            daemon=True,
        ).start()
        ready.set()
        log.info(
            "ready",
            extra=kv(
                **_ready_fields(app, settings, engine, time.perf_counter() - start)
            ),
        )
        app.set_serving()  # after the ready line: whoever sees SERVING can find it
        while not stop.wait(0.5):
            pass
        log.info("shutting down", extra=kv(grace_seconds=settings.grace_seconds))
        stuck = _stop_within(app, settings.grace_seconds)
    except _Interrupted:
        log.info("interrupted while loading; stopping")
        app.stop(0).wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if scheduler is not None:
        scheduler.join()
    if engine.durable:
        if ready.is_set() and engine._wal.failed is None:
            _snapshot(engine, "shutdown")
        engine.close()
    log.info("stopped")
    if stuck:  # a thread the interpreter would wait for at exit: do not wait
        logging.shutdown()
        os._exit(0)
    return 0


def main(argv: list[str] | None = None, stderr: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m segd.server", description="Run the segd server."
    )
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    if args.print_config:
        for key, value in settings.describe().items():
            print(f"{key} = {value!r}")
        return 0
    return serve(settings, stderr)


def run() -> None:
    if "--print-config" not in sys.argv:
        hugepages.reexec_with_hugepages()  # once, before any thread (segd.hugepages)
    sys.exit(main())
