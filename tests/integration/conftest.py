"""Integration fixtures: real segd servers on free loopback ports, clients, segctl runs.

In-process servers come from ``segd.server.app.build_app`` on ``127.0.0.1:0``; subprocess
servers from ``python -m segd.server`` (see ``start_subprocess_server``). Nothing here talks to
anything but 127.0.0.1.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ensure_stubs() -> None:
    """Make ``segd.v1`` importable from a plain checkout (the real setup is
    ``pip install -e .``, whose build generates the stubs)."""
    try:
        import segd.v1.segments_pb2  # noqa: F401

        return
    except ImportError:
        pass
    proto = ROOT / "proto"
    if not (proto / "segd" / "v1" / "segments_pb2.py").exists():
        import grpc_tools
        from grpc_tools import protoc

        well_known = Path(grpc_tools.__file__).parent / "_proto"
        files = sorted(
            str(p.relative_to(proto)) for p in (proto / "segd/v1").glob("*.proto")
        )
        cwd = os.getcwd()
        os.chdir(proto)
        try:
            rc = protoc.main(
                [
                    "protoc",
                    "-I.",
                    f"-I{well_known}",
                    "--python_out=.",
                    "--pyi_out=.",
                    "--grpc_python_out=.",
                    *files,
                ]
            )
        finally:
            os.chdir(cwd)
        assert rc == 0, "protoc failed on proto/segd/v1/*.proto"
    sys.path.insert(0, str(proto))
    for name in [m for m in sys.modules if m == "segd" or m.startswith("segd.")]:
        del sys.modules[name]


_ensure_stubs()

from segd import Engine  # noqa: E402
from segd.server.app import App, build_app  # noqa: E402
from segd.server.client import SegdClient  # noqa: E402
from segd.server.settings import Settings  # noqa: E402

TOKEN = "test-token"
N_CONTACTS = 1000
CITIES = ("Moscow", "Kazan", "Omsk", "Perm")
BASE_TS = 1_735_689_600  # 2025-01-01T00:00:00Z


def contact_rows(n: int = N_CONTACTS) -> list[dict[str, Any]]:
    """Deterministic contacts: gender alternates, age cycles 18..77, city cycles."""
    return [
        {
            "customer_id": f"c{i:04d}",
            "gender": "m" if i % 2 == 0 else "f",
            "age": 18 + i % 60,
            "city": CITIES[i % 4],
        }
        for i in range(n)
    ]


def expected(pred: Callable[[dict[str, Any]], bool]) -> list[str]:
    return [r["customer_id"] for r in contact_rows() if pred(r)]


def view_rows(n_contacts: int = 100) -> list[dict[str, Any]]:
    """One ``view`` event for each of the first ``n_contacts`` contacts."""
    return [
        {"customer_id": f"c{i:04d}", "ts": BASE_TS + i, "type": "view"}
        for i in range(n_contacts)
    ]


def seeded_engine() -> Any:
    import pyarrow as pa

    eng = Engine()
    eng.upsert_contacts(pa.Table.from_pylist(contact_rows()))
    eng.append_events(pa.Table.from_pylist(view_rows()))
    return eng


@dataclass
class Running:
    app: App
    engine: Any
    address: str
    token: str | None

    def client(self, token: str | None = "default", **kw: Any) -> SegdClient:
        return SegdClient(
            self.address, token=self.token if token == "default" else token, **kw
        )


@pytest.fixture
def make_server() -> Iterator[Callable[..., Running]]:
    """Factory: ``make_server(engine=None, token=TOKEN, serving=True, **settings)``."""
    started: list[Running] = []

    def make(
        engine: Any = None,
        token: str | None = TOKEN,
        serving: bool = True,
        **settings: Any,
    ) -> Running:
        eng = engine if engine is not None else seeded_engine()
        s = Settings(address="127.0.0.1:0", token=token, workers=16, **settings)
        app = build_app(s, eng, serving=serving)
        app.server.start()
        run = Running(app, eng, f"127.0.0.1:{app.port}", token)
        started.append(run)
        return run

    yield make
    for run in started:
        run.app.stop(0).wait(5)


@pytest.fixture
def srv(make_server: Callable[..., Running]) -> Running:
    """A fresh server over the seeded engine, token ``TOKEN``."""
    return make_server()


@pytest.fixture
def client(srv: Running) -> Iterator[SegdClient]:
    c = srv.client(timeout=20.0)
    yield c
    c.close()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_segctl(
    running: Running | None, *argv: str, token: str | None = "default"
) -> CliResult:
    """``segctl`` in-process against ``running`` (connection flags added)."""
    from segd.server.segctl.__main__ import main

    args = list(argv)
    if running is not None:
        args += ["--address", running.address]
        tok = running.token if token == "default" else token
        if tok:
            args += ["--token", tok]
    out, err = io.StringIO(), io.StringIO()
    code = main(args, stdout=out, stderr=err)
    return CliResult(code, out.getvalue(), err.getvalue())


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: this checkout first on the path."""
    env = dict(os.environ)
    paths = [str(ROOT), *(p for p in sys.path if p.endswith("proto"))]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.pop("SEGD_ADDRESS", None)
    env.pop("SEGD_TOKEN", None)
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


READY = re.compile(r"msg=ready .*\bport=(\d+)")


def start_subprocess_server(
    tmp_path: Path, *args: str, timeout: float = 60.0
) -> ServerProcess:
    """``python -m segd.server --address 127.0.0.1:0 ARGS``; waits for the ready line."""
    log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
    log = open(log_path, "w")  # noqa: SIM115 (the child owns it)
    proc = subprocess.Popen(
        [sys.executable, "-m", "segd.server", "--address", "127.0.0.1:0", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    log.close()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = READY.search(log_path.read_text())
        if m:
            return ServerProcess(proc, int(m.group(1)), log_path)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"server did not get ready:\n{log_path.read_text()}")


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    procs: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        p = start_subprocess_server(tmp_path, *args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
