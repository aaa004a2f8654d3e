"""``segctl serve`` / ``python -m segd.server``: load, serve, stop gracefully on SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, TextIO

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


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The server's flags (shared by ``segctl serve`` and ``python -m segd.server``)."""
    p.add_argument(
        "--address",
        help=f"HOST:PORT to listen on; port 0 picks a free one "
        f"(env SEGD_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    p.add_argument(
        "--token",
        help="bearer token every call must carry (env SEGD_TOKEN; default: no auth)",
    )
    p.add_argument(
        "--tls-cert", help="PEM certificate chain (with --tls-key; default: plaintext)"
    )
    p.add_argument("--tls-key", help="PEM private key (with --tls-cert)")
    p.add_argument(
        "--data-dir",
        help="directory for persistent state, created if missing "
        "(persistence is a later issue: data is in memory only for now)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=Settings.workers,
        help="RPC worker threads; each open stream holds one (default %(default)s)",
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
        "workers",
        "max_message_mb",
        "result_cache",
        "demo",
        "metrics_port",
        "grace_seconds",
        "log_level",
    ):
        values[key] = getattr(args, key)
    return Settings(**values)


def _stop_within(app: App, grace_seconds: float) -> None:
    """Stop the server: in-flight calls get `grace_seconds`, then they are cancelled.

    A handler thread that is still busy after the grace (stuck in a request iterator of a
    broken stream, or in a long engine call) would keep the interpreter from exiting,
    since the RPC pool's threads are joined at exit; the stop must not wait for a second
    signal, so such threads are reported and the process exits without them."""
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
        log.info("stopped")
        logging.shutdown()
        os._exit(0)


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


def _load_demo(engine: Any, contacts: int) -> Any:
    """Generate and load the demo dataset ending at the current hour; returns its ``now``.

    The events end at the server clock (rounded down to the hour, so the dataset is the
    same all hour), hence `in last 30 days` means what an operator expects.
    """
    from datetime import UTC, datetime

    from segd.datagen import generate

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    data = generate(contacts=contacts, now=now)
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
    }


def serve(settings: Settings, stderr: TextIO | None = None) -> int:
    """Run the server until SIGTERM / SIGINT; 0 on a clean stop, 1 if it cannot start."""
    configure_logging(settings.log_level, stderr)
    from segd import Engine

    engine = Engine(result_cache_size=settings.result_cache)
    try:
        if settings.data_dir:
            os.makedirs(settings.data_dir, exist_ok=True)
        app = build_app(settings, engine, serving=False)
        metrics_port = None
        if settings.metrics_port is not None:
            metrics_port = app.metrics.serve_http(settings.host, settings.metrics_port)
    except (StartupError, OSError) as exc:
        log.error("cannot start", extra=kv(error=str(exc)))
        return 1
    app.server.start()
    log.info(
        "listening",
        extra=kv(
            address=f"{settings.host}:{app.port}",
            health="NOT_SERVING",
            metrics_port=metrics_port,
            workers=settings.workers,
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
    try:
        start = time.perf_counter()
        if settings.demo:
            log.info("generating demo data", extra=kv(contacts=settings.demo))
            demo_now = _load_demo(engine, settings.demo)
            now_s = (
                int(demo_now.timestamp()) if hasattr(demo_now, "timestamp") else None
            )
            log.info("demo data loaded", extra=kv(demo_now=demo_now, demo_now_s=now_s))
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
        _stop_within(app, settings.grace_seconds)
    except _Interrupted:
        log.info("interrupted while loading; stopping")
        app.stop(0).wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped")
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
    sys.exit(main())
