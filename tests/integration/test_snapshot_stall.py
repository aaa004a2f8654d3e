"""Writes keep being acknowledged while ``segctl snapshot`` runs against a live server.

The server forks the snapshot writer (docs/storage.md, "Snapshots"): the engine is held
only for the fork, so a client streaming IngestEvents sees at most a short stall, while
the in-process writer (what the server falls back to when gRPC's fork handlers are on)
holds every writer for the whole write. Both run here on the same 200k-contact data
directory, so the test also shows that the measurement tells the two apart.
"""

from __future__ import annotations

import signal

import pytest

from segd.bench.durability import write_stall
from tests.integration.conftest import run_segctl, start_subprocess_server


class _Address:
    """What run_segctl needs of a server: its address (no token)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.token = None


def _stall(proc) -> dict:
    def snapshot() -> None:
        res = run_segctl(_Address(proc.address), "snapshot", "--json")
        assert res.code == 0, res.err

    return write_stall(proc.address, snapshot, writers=2, rows=100, after_s=0.5)


@pytest.mark.timeout(300)
def test_writes_go_on_during_a_forked_snapshot(tmp_path, monkeypatch):
    data = tmp_path / "data"
    proc = start_subprocess_server(
        tmp_path, "--data-dir", str(data), "--demo", "200k", timeout=180
    )
    try:
        assert "snapshots=forked" in proc.log()
        forked = _stall(proc)
    finally:
        proc.stop(signal.SIGTERM, timeout=120)
    assert not forked["errors"], forked
    # Acknowledged all along; the longest stall is the fork (tens of ms), far below
    # the write (seconds at this size): the bound is generous for a noisy machine.
    assert forked["acks_during"] >= 5, forked
    assert forked["max_stall_s"] < 1.0, forked
    assert forked["max_stall_s"] < forked["snapshot_seconds"] / 2, forked

    # The same directory with gRPC's fork support on: the snapshot is written in
    # process, under the read lock, and writers wait for all of it.
    monkeypatch.setenv("GRPC_ENABLE_FORK_SUPPORT", "true")
    proc = start_subprocess_server(tmp_path, "--data-dir", str(data), timeout=120)
    try:
        assert "snapshots=in-process" in proc.log()
        in_process = _stall(proc)
    finally:
        proc.stop(signal.SIGKILL)
    assert not in_process["errors"], in_process
    assert in_process["max_stall_s"] >= in_process["snapshot_seconds"] / 2, in_process
    assert in_process["max_stall_s"] > forked["max_stall_s"], (forked, in_process)
    print("write stall, forked:", forked, "in process:", in_process)
