"""Snapshots under a live gRPC server: writers are forked while clients ingest and count
through gRPC (gRPC's fork handlers had crashed such children: segd turns them off), every
snapshot verifies and restores what it covers (docs/storage.md, "Snapshots")."""

from __future__ import annotations

import threading
import time

import segd
from segd import Engine
from segd.snapshot import read_snapshot, verify_snapshot
from tests.integration.conftest import BASE_TS


def test_forked_snapshots_while_clients_ingest_and_read(make_server, tmp_path):
    eng = Engine.open(tmp_path / "data")
    assert eng.snapshot_background is None  # the default: fork where safe...
    assert segd._GRPC_FORK_SAFE  # ...which it is here (tests/conftest.py)
    srv = make_server(engine=eng)
    stop = threading.Event()
    acked: list[int] = []
    errors: list[BaseException] = []

    def ingest(tag: str) -> None:
        with srv.client() as c:
            i = 0
            while not stop.is_set():
                try:
                    c.ingest_events(
                        [
                            {
                                "customer_id": f"{tag}{i}-{j}",
                                "ts": BASE_TS + j,
                                "type": "view",
                            }
                            for j in range(20)
                        ]
                    )
                    acked.append(i)
                except BaseException as exc:  # noqa: BLE001 (reported below)
                    errors.append(exc)
                    return
                i += 1

    def count() -> None:
        with srv.client() as c:
            while not stop.is_set():
                try:
                    c.count("view() in last 100000 days")
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
                    return

    workers = [threading.Thread(target=ingest, args=(t,)) for t in "ab"] + [
        threading.Thread(target=count)
    ]
    for w in workers:
        w.start()
    infos = []
    eng.snapshot_background = True  # a forked writer, whatever the server's default
    try:
        for _ in range(12):
            info = eng.snapshot()
            assert info.pause_seconds < info.seconds
            infos.append({"path": info.path, "wal_seq": info.wal_seq})
            time.sleep(0.02)
        with srv.client(timeout=60) as c:  # and through the RPC (the server's way)
            infos.append(c.snapshot())
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert not errors, errors
    assert len(acked) > 12
    seqs = [info["wal_seq"] for info in infos]
    assert seqs == sorted(seqs)
    # The last two are kept; each verifies and restores the events it covers.
    for info in infos[-2:]:
        verify_snapshot(info["path"])
        state = read_snapshot(info["path"])
        assert state.wal_seq == info["wal_seq"]
        # every batch names 20 new contacts: whole batches only
        assert state.store.n_events == state.store.n_contacts
        assert state.store.n_events % 20 == 0
    eng.close()
    restarted = Engine.open(tmp_path / "data")
    try:
        assert restarted.stats()["events"] == 20 * len(acked)
    finally:
        restarted.close()
