"""Real processes: ``python -m segd.server`` and ``segctl`` as an operator runs them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from segd.server.client import SegdClient, SegdRpcError
from tests.integration.conftest import subprocess_env


def segctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segd.server.segctl", *args],
        capture_output=True, text=True, env=subprocess_env(), timeout=timeout,
    )  # fmt: skip


def test_demo_server_serves_then_stops_on_sigterm(server_process):
    proc = server_process("--demo", "2000", "--token", "tok", "--grace", "2")
    log = proc.log()
    assert "msg=listening" in log and "health=NOT_SERVING" in log
    assert "msg=ready" in log and "contacts=" in log and "load_seconds=" in log
    # the contact indexes are built before `ready`, not by the first clients
    assert log.index('msg="indexes warmed"') < log.index("msg=ready")
    with SegdClient(proc.address, token="tok") as c:
        assert c.health() == "SERVING"
        stats = c.stats()
        assert stats["contacts"] >= 2000 and stats["events"] > 0
        assert c.count("not (gender is null) or gender is null") == stats["contacts"]
    r = segctl("--address", proc.address, "--token", "tok", "--json", "stats")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["contacts"] == stats["contacts"]
    r = segctl("--address", proc.address, "segment", "count", "age > 1")
    assert (
        r.returncode == 1
        and "UNAUTHENTICATED" in r.stderr
        and "Traceback" not in r.stderr
    )
    assert proc.stop(signal.SIGTERM) == 0
    log = proc.log()
    assert 'msg="shutting down"' in log and "msg=stopped" in log


def test_health_goes_not_serving_to_serving(tmp_path):
    """Poll health from the moment the port listens: NOT_SERVING while the demo data
    loads, then SERVING, never back."""
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segd.server", "--address", "127.0.0.1:0", "--demo", "20k"],
            stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(),
        )  # fmt: skip
    try:
        end = time.monotonic() + 60
        m = None
        while m is None and time.monotonic() < end and proc.poll() is None:
            m = re.search(r"msg=listening address=(\S+)", log_path.read_text())
            time.sleep(0.01)
        assert m, log_path.read_text()
        seen: list[str] = []
        with grpc.insecure_channel(m.group(1)) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < end:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=20).status
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                if not seen or seen[-1] != name:
                    seen.append(name)
                if name == "SERVING":
                    break
                time.sleep(0.01)
        assert seen == ["NOT_SERVING", "SERVING"], seen
        assert "msg=ready" in log_path.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_is_abrupt_and_port_is_free_again(server_process):
    proc = server_process()
    assert SegdClient(proc.address).health() == "SERVING"
    proc.proc.send_signal(signal.SIGKILL)
    assert proc.proc.wait(10) == -signal.SIGKILL
    with SegdClient(proc.address, retries=0, timeout=1) as c:
        with pytest.raises(SegdRpcError) as e:
            c.health()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_segctl_serve_and_bad_address(tmp_path):
    data = tmp_path / "never"
    r = segctl(
        "serve", "--address", "256.1.1.1:99999", "--data-dir", str(data), timeout=30
    )
    assert r.returncode == 1 and "cannot start" in r.stderr
    r = segctl(
        "serve", "--print-config", "--token", "s3cret", "--data-dir", str(tmp_path)
    )
    assert r.returncode == 0 and "s3cret" not in r.stdout and "***" in r.stdout
    r = segctl("serve", "--demo", "lots")
    assert r.returncode == 2 and "--demo" in r.stderr


def test_segctl_subprocess_against_data_dir_server(server_process, tmp_path):
    data_dir = tmp_path / "data"
    proc = server_process("--data-dir", str(data_dir), "--metrics-port", "0")
    assert data_dir.is_dir()
    assert "metrics_port=" in proc.log() and "metrics_port=None" not in proc.log()
    start = time.monotonic()
    r = segctl("--address", proc.address, "health")
    assert (r.returncode, r.stdout.strip()) == (0, "SERVING")
    assert time.monotonic() - start < 30
    proc.stop()
