"""Durability through the server: idempotent ingest, AdminService.Snapshot, restarts,
a second server on the same directory, --demo rules, a full disk, a read-only directory
and ``segctl repair`` — real processes and real files (docs/storage.md)."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from segd import Engine, hugepages
from segd import wal as walmod
from segd.server.client import SegdClient, SegdRpcError
from segd.v1 import ingest_pb2
from tests.integration.conftest import (
    BASE_TS,
    TOKEN,
    run_segctl,
    subprocess_env,
)


def views(prefix: str, n: int = 10) -> list[dict]:
    return [
        {"customer_id": f"{prefix}{i}", "ts": BASE_TS + i, "type": "view"}
        for i in range(n)
    ]


# -- in-process servers over durable engines ------------------------------------------
@pytest.fixture
def durable(make_server, tmp_path):
    eng = Engine.open(tmp_path / "data")
    yield make_server(engine=eng)
    eng.close()


def test_same_batch_twice_applies_once(durable):
    with durable.client() as c:
        first = c.ingest_events(views("a"), idempotency_key="batch-1")
        again = c.ingest_events(views("a"), idempotency_key="batch-1")
        assert (again.rows, again.sequence) == (first.rows, first.sequence)
        assert c.upsert_contacts([{"customer_id": "a0", "n": 1}], idempotency_key="u")
        c.upsert_contacts([{"customer_id": "a0", "n": 2}], idempotency_key="u")
        assert c.count("n = 1") == 1
        stats = c.stats()
        assert stats["event_types"]["view"] == 10
        assert stats["events_sequence"] == first.sequence
        assert stats["storage"].endswith("data") and stats["fsync"] == "always"
        # without a key (a raw request) a repeat applies again
        req = ingest_pb2.IngestEventsRequest(
            events=ingest_pb2.EventBatch(
                events=[
                    ingest_pb2.Event(customer_id="z", ts_ms=BASE_TS * 1000, type="view")
                ]
            )
        )
        md = (("authorization", f"Bearer {TOKEN}"),)
        c.ingest_stub.IngestEvents(req, metadata=md)
        c.ingest_stub.IngestEvents(req, metadata=md)
        assert c.stats()["event_types"]["view"] == 12


def test_client_sets_a_key_on_every_call_and_retries_ingest(durable):
    seen: list[str] = []
    with durable.client() as c:
        real = c.ingest_stub.IngestEvents

        class Flaky:
            """Applies the first attempt, then loses its answer (UNAVAILABLE)."""

            calls = 0

            def __call__(self, request, **kw):
                seen.append(request.idempotency_key)
                resp = real(request, **kw)
                Flaky.calls += 1
                if Flaky.calls == 1:
                    raise _Unavailable()
                return resp

        c.ingest_stub.IngestEvents = Flaky()
        res = c.ingest_events(views("r"))
        assert res.rows == 10
        assert len(seen) == 2 and seen[0] == seen[1] and len(seen[0]) == 32
        c.ingest_events(views("s"))
        assert seen[2] != seen[0]  # a new call, a new key
        assert c.stats()["event_types"]["view"] == 20  # the retry applied nothing


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "connection lost"

    def trailing_metadata(self):
        return ()


def test_snapshot_rpc_and_segctl_snapshot(durable, srv):
    with durable.client() as c:
        c.ingest_events(views("a"))
        info = c.snapshot()
        assert info["wal_seq"] >= 1 and info["bytes"] > 0
        assert Path(info["path"]).is_dir()
    r = run_segctl(durable, "--json", "snapshot")
    assert r.code == 0, r.err
    assert '"wal_seq"' in r.out
    # an in-memory server has nothing to snapshot into
    with srv.client() as c, pytest.raises(SegdRpcError) as err:
        c.snapshot()
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    r = run_segctl(srv, "snapshot")
    assert r.code == 1 and "FAILED_PRECONDITION" in r.err


def test_failed_fsync_answers_unavailable_and_reads_keep_working(durable, monkeypatch):
    with durable.client(retries=0) as c:
        c.ingest_events(views("a"))

        def broken(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(walmod.os, "fsync", broken)
        with pytest.raises(SegdRpcError) as err:
            c.ingest_events(views("b"))
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        monkeypatch.undo()
        with pytest.raises(SegdRpcError) as err:
            c.upsert_contacts([{"customer_id": "x", "n": 1}])
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        assert "accepts no more writes" in err.value.message
        assert c.count("view()") >= 10


# -- real server processes --------------------------------------------------------------
def test_restart_keeps_everything_and_snapshots_on_shutdown(tmp_path, server_process):
    data = tmp_path / "d"
    proc = server_process("--data-dir", str(data))
    assert f"storage={data}" in proc.log() and "fsync=always" in proc.log()
    with SegdClient(proc.address) as c:
        c.upsert_contacts([{"customer_id": f"a{i}", "age": 20 + i} for i in range(10)])
        c.ingest_events(views("a"))
        c.create_segment("old", "age >= 25")
        before = c.count('in segment "old"'), c.stats()["events"]
    assert proc.stop(signal.SIGTERM) == 0
    assert "msg=snapshot" in proc.log() and "why=shutdown" in proc.log()
    assert len(list((data / "snapshots").iterdir())) == 1
    proc = server_process("--data-dir", str(data))
    with SegdClient(proc.address) as c:
        assert (c.count('in segment "old"'), c.stats()["events"]) == before
    assert "msg=recovered" in proc.log()


def test_default_data_dir_and_in_memory(tmp_path, server_process):
    proc = server_process()  # cwd is tmp_path
    assert "storage=./segd-data" in proc.log()
    assert (tmp_path / "segd-data" / "wal").is_dir()
    proc.stop()
    proc = server_process("--in-memory")
    assert "storage=memory" in proc.log()


def test_second_server_on_the_same_directory_is_refused(tmp_path, server_process):
    data = tmp_path / "d"
    server_process("--data-dir", str(data))
    out = subprocess.run(
        [sys.executable, "-m", "segd.server", "--address", "127.0.0.1:0",
         "--data-dir", str(data)],
        capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "in use by another segd process" in out.stderr + out.stdout


def test_demo_is_loaded_only_into_an_empty_data_dir(tmp_path, server_process):
    proc = server_process("--demo", "300")
    assert "storage=memory" in proc.log()
    proc.stop()
    data = tmp_path / "demo"
    proc = server_process("--demo", "300", "--data-dir", str(data))
    with SegdClient(proc.address) as c:
        first = c.stats()
        c.upsert_contacts([{"customer_id": "extra", "age": 1}])
    proc.stop()
    proc = server_process("--demo", "300", "--data-dir", str(data))
    assert "demo data not loaded" in proc.log()
    with SegdClient(proc.address) as c:
        assert c.stats()["contacts"] == first["contacts"] + 1


def test_corrupt_log_stops_startup_and_segctl_repair_fixes_it(tmp_path, server_process):
    data = tmp_path / "d"
    with Engine.open(data) as eng:
        for i in range(5):
            eng.append_events(views(f"b{i}-", 3))
    seg = walmod.segment_files(data / "wal")[0]
    raw = bytearray(seg.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    seg.write_bytes(bytes(raw))
    out = subprocess.run(
        [sys.executable, "-m", "segd.server", "--address", "127.0.0.1:0",
         "--data-dir", str(data)],
        capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    log = out.stderr + out.stdout
    assert str(seg) in log and re.search(r"corrupt at offset \d+", log)
    r = subprocess.run(
        [sys.executable, "-m", "segd.server.segctl", "repair", "--data-dir", str(data)],
        input="n\n", capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "nothing changed" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "segd.server.segctl", "repair", "--data-dir", str(data)],
        input="y\n", capture_output=True, text=True, env=subprocess_env(), timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "truncate the log? [y/N]" in r.stdout
    proc = server_process("--data-dir", str(data))
    with SegdClient(proc.address) as c:
        assert 0 < c.stats()["events"] < 15
    r = run_segctl(None, "repair", "--data-dir", str(data), "--yes")
    assert r.code == 1 and "in use" in r.err  # the running server holds the lock


# -- a full disk, a read-only directory -----------------------------------------------
def _mount_tmpfs(path: Path, size: str, *extra: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *extra]), "tmpfs",
         str(path)],
        capture_output=True,
    )  # fmt: skip
    return r.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _start_limited(tmp_path: Path, data: Path, fsize: int | None):
    """A server process whose file-size limit (RLIMIT_FSIZE) is `fsize`, if given."""

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

    log_path = tmp_path / f"limited-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segd.server", "--address", "127.0.0.1:0",
             "--data-dir", str(data)],
            stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(),
            preexec_fn=limit,
        )  # fmt: skip
    end = time.monotonic() + 60
    while time.monotonic() < end:
        m = re.search(r"msg=ready .*\bport=(\d+)", log_path.read_text())
        if m:
            return proc, f"127.0.0.1:{m.group(1)}"
        assert proc.poll() is None, log_path.read_text()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(log_path.read_text())


def test_disk_full_fails_the_write_cleanly_and_recovers(tmp_path):
    """RESOURCE_EXHAUSTED, nothing of the batch stays, reads work, and writes work again
    once space returns. A small tmpfs when this process may mount one, else the file
    size limit (RLIMIT_FSIZE, raised again with prlimit)."""
    mnt = tmp_path / "mnt"
    mounted = _mount_tmpfs(mnt, "2m")
    data = mnt / "data"
    proc, address = _start_limited(tmp_path, data, None if mounted else 400_000)
    try:
        with SegdClient(address, retries=0) as c:
            applied, failed = 0, None
            big = [
                {"customer_id": f"c{i}", "ts": BASE_TS + i, "type": "view",
                 "phrase": "x" * 200 + str(i)}
                for i in range(500)
            ]  # fmt: skip
            for _ in range(200):
                try:
                    c.ingest_events(big)
                    applied += 1
                except SegdRpcError as err:
                    failed = err
                    break
            assert failed is not None, "the disk never filled"
            assert failed.code == grpc.StatusCode.RESOURCE_EXHAUSTED, failed
            assert "full" in failed.message
            stats = c.stats()
            assert stats["event_types"]["view"] == 500 * applied  # nothing of it stayed
            assert c.count("view()") == 500  # reads keep working
            with pytest.raises(SegdRpcError):
                c.ingest_events(big)  # still full
            if mounted:
                subprocess.run(
                    ["mount", "-o", "remount,size=64m", str(mnt)], check=True
                )
            else:
                resource.prlimit(
                    proc.pid,
                    resource.RLIMIT_FSIZE,
                    (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
                )
            c.ingest_events(big)
            assert c.stats()["event_types"]["view"] == 500 * (applied + 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        with Engine.open(data) as eng:  # the log is intact: everything acked is there
            assert eng.stats()["event_types"]["view"] == 500 * (applied + 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if mounted:
            _umount(mnt)


def test_read_only_data_dir_is_a_clear_startup_error(tmp_path):
    data = tmp_path / "ro"
    with Engine.open(data) as eng:
        eng.append_events(views("a"))
    if _mount_tmpfs(tmp_path / "ro-mnt", "1m"):
        mnt = tmp_path / "ro-mnt"
        try:
            (mnt / "wal").mkdir()
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
            target = mnt
            out = subprocess.run(
                [sys.executable, "-m", "segd.server", "--address", "127.0.0.1:0",
                 "--data-dir", str(target)],
                capture_output=True, text=True, env=subprocess_env(), timeout=60,
            )  # fmt: skip
        finally:
            _umount(mnt)
    elif os.geteuid() != 0:
        os.chmod(data / "wal", 0o555)
        os.chmod(data, 0o555)
        try:
            out = subprocess.run(
                [sys.executable, "-m", "segd.server", "--address", "127.0.0.1:0",
                 "--data-dir", str(data)],
                capture_output=True, text=True, env=subprocess_env(), timeout=60,
            )  # fmt: skip
        finally:
            os.chmod(data, 0o755)
            os.chmod(data / "wal", 0o755)
    else:
        pytest.skip("root without mount: permissions cannot make a directory read-only")
    assert out.returncode == 1
    log = out.stderr + out.stdout
    assert "cannot start" in log and ("not writable" in log or "Read-only" in log)


def test_snapshot_schedule(tmp_path, server_process):
    from segd.server.main import snapshot_schedule

    assert snapshot_schedule("10m") == (600.0, None)
    assert snapshot_schedule("5000000") == (None, 5_000_000)
    assert snapshot_schedule(None) == (None, None)
    with pytest.raises(ValueError, match="30s, 10m"):
        snapshot_schedule("soon")
    r = run_segctl(None, "serve", "--snapshot-every", "soon")
    assert r.code == 2 and "--snapshot-every" in r.err
    data = tmp_path / "d"
    proc = server_process("--data-dir", str(data), "--snapshot-every", "3")
    with SegdClient(proc.address) as c:
        for i in range(4):
            c.ingest_events(views(f"s{i}-", 2))
    end = time.monotonic() + 30
    while time.monotonic() < end and "why=schedule" not in proc.log():
        time.sleep(0.2)
    assert "why=schedule" in proc.log()
    assert list((data / "snapshots").iterdir())


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)


@pytest.mark.skipif(not hugepages.applicable(), reason="no glibc 2.35+ with THP here")
def test_server_starts_itself_again_with_malloc_huge_pages(server_process, monkeypatch):
    """``python -m segd.server`` re-executes itself once with glibc.malloc.hugetlb=1
    (segd.hugepages): same PID (the one Popen started), the tunable in its
    environment, ``hugepages=True`` on the ready line; SEGD_HUGEPAGES=0 keeps it off."""
    proc = server_process("--in-memory")
    assert "hugepages=True" in proc.log()
    env = _environ_of(proc.proc.pid)
    assert hugepages.enabled(env)
    with SegdClient(proc.address) as c:
        assert c.stats()["contacts"] == 0
    proc.stop()
    monkeypatch.setenv(hugepages.OPT_OUT, "0")
    proc = server_process("--in-memory")
    assert "hugepages=False" in proc.log()
    assert not hugepages.enabled(_environ_of(proc.proc.pid))
