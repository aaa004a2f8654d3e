"""One engine in its own subprocess (msgspec's benchmark pattern), driven over a pipe.

The parent sends ``(command, args)``; the worker answers ``("ok", result)`` or
``("error", traceback)``, with ``("progress", phase, done, total)`` messages before the
answer of a long command. A separate process per engine keeps each one's resident
memory clean (the RSS delta of its load is the engine's), and lets the runner alternate
calls between engines without one engine's caches or allocator state leaking into the
other's numbers.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

from segd import hugepages

PAGE = 4096


def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _status_kb("VmHWM") * 1024


def _time_count(adapter, name: str, reps: int) -> dict:
    """Run ``count`` ``reps`` times; per-call seconds (mean of the reps) and the count.

    ``cpu_seconds`` is the worker process's CPU time per call over the same reps (all
    its threads: DuckDB's and ClickHouse's pools count too), measured the same way for
    every engine: wall time above it is time the process waited (another process on
    the core, page faults served from disk), not work of the engine."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(reps):
        n = adapter.count(name)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {
        "seconds": wall / reps,
        "cpu_seconds": cpu / reps,
        "count": n,
        "reps": reps,
    }


def _serve(conn, module: str, options: dict) -> None:
    # Anything an engine prints (DuckDB's progress bar writes to fd 1) goes to stderr:
    # the parent's stdout carries only the report (`--json` must stay parseable).
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    before_import = rss_bytes()
    adapter = importlib.import_module(module).Adapter(**options)
    baseline = rss_bytes()
    conn.send(
        ("ok", {"label": adapter.label, "import_rss_bytes": baseline - before_import})
    )

    def progress(phase: str, done: int, total: int) -> None:
        conn.send(("progress", phase, done, total))

    while True:
        msg = conn.recv()
        if msg is None:
            close = getattr(adapter, "close", None)
            if close is not None:
                close()  # temporary database files go
            return
        cmd, args = msg
        try:
            if cmd == "load":
                out = adapter.load(args["paths"], progress=progress)
                out["rss_bytes"] = rss_bytes() - baseline
                out["peak_rss_bytes"] = peak_rss_bytes() - baseline
            elif cmd == "time":
                out = _time_count(adapter, args["name"], args["reps"])
            elif cmd == "call":
                out = getattr(adapter, args["method"])(*args.get("args", ()))
            else:
                raise ValueError(f"unknown worker command {cmd!r}")
            conn.send(("ok", out))
        except BaseException:  # noqa: BLE001 - reported to the parent, which fails loudly
            conn.send(("error", traceback.format_exc()))


class WorkerError(RuntimeError):
    """A command failed in a worker, or the worker died (the message says which)."""


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ's variables that `env` sets differently, set for the block (a
    spawned child inherits them)."""
    changed = {k: os.environ.get(k) for k, v in env.items() if os.environ.get(k) != v}
    os.environ.update({k: env[k] for k in changed})
    try:
        yield
    finally:
        for k, old in changed.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


class Worker:
    """The parent's handle on one engine subprocess (``spawn``: nothing inherited)."""

    def __init__(self, module: str, options: dict | None = None) -> None:
        ctx = mp.get_context("spawn")
        self.module = module
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve, args=(child, module, options or {}), daemon=True
        )
        if module.endswith("engine_segd"):
            # segd runs as its server does: malloc's huge pages on (segd.hugepages)
            with _environ(hugepages.with_hugepages()):
                self.proc.start()
        else:
            self.proc.start()
        child.close()
        hello = self._answer(None, f"starting {module}")
        self.label: str = hello["label"]

    def _answer(self, on_progress, what: str) -> Any:
        while True:
            while not self.conn.poll(0.5):
                if not self.proc.is_alive():
                    raise WorkerError(
                        f"{self.module} worker died (exit code {self.proc.exitcode}) "
                        f"while {what}; out of memory?"
                    )
            try:
                kind, *rest = self.conn.recv()
            except EOFError:
                raise WorkerError(f"{self.module} worker closed while {what}") from None
            if kind == "progress":
                if on_progress is not None:
                    on_progress(*rest)
                continue
            if kind == "error":
                raise WorkerError(f"{self.label} failed while {what}:\n{rest[0]}")
            return rest[0]

    def request(self, cmd: str, args: dict | None = None, on_progress=None) -> Any:
        self.conn.send((cmd, args or {}))
        return self._answer(on_progress, f"running {cmd} {args or ''}"[:200])

    def call(self, method: str, *args: Any) -> Any:
        """``adapter.method(*args)`` in the worker."""
        return self.request("call", {"method": method, "args": args})

    def close(self) -> None:
        try:
            if self.proc.is_alive():
                self.conn.send(None)
                self.proc.join(10)
        except (OSError, BrokenPipeError):
            pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
